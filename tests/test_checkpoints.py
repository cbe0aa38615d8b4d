"""Checkpoint files: what they hold is read off their tensors, never off their names."""

from __future__ import annotations

import json
import pickle
import random
import zipfile
from collections import Counter

import pytest
import torch
from safetensors.torch import save_file

import cnp
from cnp import CheckpointError, VARIANTS
from cnp.checkpoints import fingerprint, from_state_dict, infer, inspect, load
from checkpoint_files import (POSITIONAL_HEAD_VARIANTS, RunsCode, edited_records, official_state,
                              save_official)

from scopes import module_unless_mutating
from spec_page import SPEC_PAGE  # the variants table of docs/spec.md


# ---------------------------------------------------------------- the released form


@pytest.fixture(scope=module_unless_mutating)
def report_of(released):
    """variant → `inspect` of its file in the released form, computed once per module."""
    reports = {}

    def report(variant):
        if variant not in reports:
            reports[variant] = inspect(released[variant][0])
        return reports[variant]

    return report


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_generated_file_has_the_released_form(released, variant):
    path, _ = released[variant]
    names = zipfile.ZipFile(path).namelist()
    assert path.suffix == ".tar" and all(n.startswith("snapshot_83.pth/") for n in names)
    stored = torch.load(path, weights_only=True, mmap=True)
    assert set(stored) == {"epoch", "network", "optimizer"}
    assert all(k.startswith("module.") for k in stored["network"])
    positional = any(".deconv_layers_1.0." in k for k in stored["network"])
    assert positional == (variant in POSITIONAL_HEAD_VARIANTS)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_architecture_inferred_from_tensors_is_the_spec_page(report_of, variant):
    inferred = report_of(variant).inferred
    page = SPEC_PAGE[variant]
    assert list(inferred.depths) == page["depths"]
    assert list(inferred.dims) == page["dims"]
    assert list(inferred.head_channels) == page["head"]
    assert inferred.depth_dim == page["depth_dim"]
    assert inferred.final_out == 18 * page["depth_dim"]
    assert (inferred.kernel, list(inferred.head_kernels)) == (7, [3, 3, 3])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_upsampling_is_inferred_never_measured(report_of, variant):
    inferred = report_of(variant).inferred
    assert list(inferred.head_upsample) == SPEC_PAGE[variant]["upsample"]
    assert inferred.upsample_basis == "inferred"
    assert "cubic-volume convention" in inferred.upsample_reason


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_released_file_matches_its_label(report_of, variant):
    report = report_of(variant)
    assert (report.matched_variant, report.expected_variant, report.expected_from, report.differences) == \
        (variant, variant, "file name", ())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_released_file_format_and_epoch_are_reported(report_of, variant):
    report = report_of(variant)
    assert (report.format, report.container, report.epoch) == ("torch-zip", None, 83)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_released_file_key_layout_is_reported(report_of, variant):
    layout = report_of(variant).key_layout
    head_keys = "positional" if variant in POSITIONAL_HEAD_VARIANTS else "named"
    assert (layout.wrapper, layout.prefixes, layout.head_keys) == ("network", ("module.",), head_keys)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_released_file_tensor_counts_are_those_saved(released, report_of, variant):
    state = released[variant][1]
    report = report_of(variant)
    assert (report.tensors, report.numel) == (len(state), sum(t.numel() for t in state.values()))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_released_file_dtypes_are_those_saved(released, report_of, variant):
    saved = Counter(str(t.dtype).removeprefix("torch.") for t in released[variant][1].values())
    assert report_of(variant).dtypes == saved


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_load_restores_every_tensor_bit_exact(released, variant):
    path, state = released[variant]
    model = cnp.load(path)
    assert model.spec.name == variant and not model.training
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) and loaded[k].dtype == state[k].dtype for k in state)


# ---------------------------------------------------------------- a mislabeled file


def test_file_labeled_xs_holding_s_is_reported_as_s(s_model_labeled_xs):
    report = inspect(s_model_labeled_xs)
    assert (report.matched_variant, report.expected_variant, report.match) == ("s", "xs", False)
    found = {d.check: (d.expected, d.found) for d in report.differences}
    assert found == {
        "backbone.depths": (SPEC_PAGE["xs"]["depths"], SPEC_PAGE["s"]["depths"]),
        "backbone.dims": (SPEC_PAGE["xs"]["dims"], SPEC_PAGE["s"]["dims"]),
        "head.channels": (SPEC_PAGE["xs"]["head"], SPEC_PAGE["s"]["head"]),
    }


def test_file_labeled_xs_holding_s_exits_1(s_model_labeled_xs, cli):
    run = cli("inspect", s_model_labeled_xs)
    assert run.code == 1 and "MISMATCH: holds S (expected XS" in run.out


def test_load_of_file_labeled_xs_gives_the_s_model_it_holds(s_model_labeled_xs):
    assert cnp.load(s_model_labeled_xs).spec.name == "s"


def test_load_as_xs_of_file_holding_s_is_refused(s_model_labeled_xs):
    with pytest.raises(CheckpointError, match="does not hold xs"):
        cnp.load(s_model_labeled_xs, "xs")


def test_load_refusal_names_each_stored_difference_with_both_values(s_model_labeled_xs):
    with pytest.raises(CheckpointError) as error:
        cnp.load(s_model_labeled_xs, "xs")
    message = str(error.value)
    assert error.value.path == str(s_model_labeled_xs)
    for field, page in (("backbone.depths", "depths"), ("backbone.dims", "dims"), ("head.channels", "head")):
        assert field in message
        assert str(SPEC_PAGE["xs"][page]) in message and str(SPEC_PAGE["s"][page]) in message


def test_expect_overrides_the_file_name(released):
    report = inspect(released["m"][0], expect="l")
    assert (report.matched_variant, report.expected_variant, report.expected_from) == ("m", "l", "argument")
    assert [d.check for d in report.differences] == ["head.channels"]


# ---------------------------------------------------------------- values


def test_nonfinite_weights_are_counted(nonfinite_file):
    assert inspect(nonfinite_file, fingerprints=True).scan.nonfinite == {"head.final_layer.weight": 2}


def test_nonfinite_weights_are_a_measured_difference(nonfinite_file):
    report = inspect(nonfinite_file, fingerprints=True)
    assert ("values.nonfinite", {"head.final_layer.weight": 2}, "measured") in \
        [(d.check, d.found, d.basis) for d in report.differences]


def test_without_fingerprints_no_values_are_read(nonfinite_file):
    assert inspect(nonfinite_file).scan is None


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_fingerprint_is_the_sha256_of_the_bytes_in_row_major_order(layout):
    import hashlib

    tensor = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    tensor = tensor if layout == "contiguous" else tensor.t()
    assert fingerprint(tensor) == hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()


# ---------------------------------------------------------------- bad input


def _write_bad(kind, tmp_path, tiny_state):
    """(path, a phrase the one-line message must contain)."""
    path = tmp_path / f"{kind}.pth"
    official = official_state(tiny_state)
    if kind == "missing":
        return path, "no such file"
    if kind == "directory":
        path.mkdir()
        return path, "is a directory"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "empty file"
    if kind == "truncated-archive":
        save_official(tiny_state, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(zipfile.BadZipFile) as reason:  # what Python's zipfile says of it
            zipfile.ZipFile(path)
        return path, f"damaged or truncated PyTorch zip archive ({reason.value})"
    if kind == "truncated-safetensors":
        path = path.with_suffix(".safetensors")
        save_file(dict(tiny_state), path)
        path.write_bytes(path.read_bytes()[:-100])
        return path, "damaged safetensors file"
    if kind == "random-bytes":
        path.write_bytes(random.Random(0).randbytes(4096))
        return path, "not a PyTorch or safetensors checkpoint"
    if kind == "text":  # no pickle opcode stops it early: the message shows the first 12 bytes
        path.write_bytes(b"epoch: 83\nnetwork: none\n")
        return path, "not a PyTorch or safetensors checkpoint (starts with b'epoch: 83\\nne')"
    if kind == "zip-missing-a-record":  # a torch zip whose tensor data is not in it
        edited_records(save_official(tiny_state, path),
                       lambda name, data: None if name.endswith("/data/0") else data)
        with pytest.raises(RuntimeError) as reason:  # what torch itself says of the file
            torch.load(path, weights_only=True)
        return path, f"damaged or truncated PyTorch zip archive ({str(reason.value).splitlines()[0]}"
    if kind == "code-in-archive":
        torch.save({"epoch": 1, "network": RunsCode(tmp_path / "ran")}, path)
        return path, "refused: its pickle calls code"
    if kind == "code-in-pickle":
        path.write_bytes(pickle.dumps(RunsCode(tmp_path / "ran"), protocol=2))
        return path, "refused: its pickle calls code"
    if kind == "other-model":
        torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 2)).state_dict(), path)
        return path, "not a ConvNeXtPose checkpoint"
    if kind == "missing-key":
        del official["module.backbone.stages.2.1.norm.running_var"]
    elif kind == "extra-key":
        official["module.head.final_layer.scale"] = torch.ones(1)
    elif kind == "contradicting-shape":
        official["module.backbone.stages.1.0.pwconv1.weight"] = torch.ones(60, 16, 1, 1)
    torch.save({"network": official}, path)
    return path, {"missing-key": "missing key backbone.stages.2.1.norm.running_var",
                  "extra-key": "unexpected key head.final_layer.scale",
                  "contradicting-shape": "has shape [60, 16, 1, 1] but its neighbours imply [64, 16, 1, 1]",
                  }[kind]


BAD = ["missing", "directory", "empty", "truncated-archive", "zip-missing-a-record",
       "truncated-safetensors", "random-bytes",
       "text", "code-in-archive", "code-in-pickle", "other-model", "missing-key", "extra-key",
       "contradicting-shape"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_raises_one_line_naming_file_and_problem(kind, tmp_path, tiny_state):
    path, problem = _write_bad(kind, tmp_path, tiny_state)
    with pytest.raises(CheckpointError) as raised:
        inspect(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_exits_2_with_one_line(kind, tmp_path, tiny_state, cli):
    path, problem = _write_bad(kind, tmp_path, tiny_state)
    run = cli("inspect", path)
    assert run.code == 2
    assert run.err.count("\n") == 1 and run.err.startswith(f"cnp: error: {path}: ") and problem in run.err


@pytest.mark.parametrize("read_with", [inspect, load], ids=["inspect", "load"])
@pytest.mark.parametrize("kind", ["code-in-archive", "code-in-pickle"])
def test_code_in_a_file_is_never_run(kind, read_with, tmp_path, tiny_state):
    path, _ = _write_bad(kind, tmp_path, tiny_state)
    with pytest.raises(CheckpointError):
        read_with(path)
    assert not (tmp_path / "ran").exists()


def test_the_code_payload_is_live(tmp_path):
    """Guard for the test above: plain unpickling does run the payload."""
    pickle.loads(pickle.dumps(RunsCode(tmp_path / "ran"))).close()
    assert (tmp_path / "ran").exists()


# ---------------------------------------------------------------- the command line


def test_inspect_exits_0_when_every_file_matches(released, cli):
    assert cli("inspect", *(released[v][0] for v in VARIANTS)).code == 0


def test_inspect_reports_each_file_on_its_own_line(released, cli):
    assert cli("inspect", *(released[v][0] for v in VARIANTS)).out.count(": ok: holds") == len(VARIANTS)


def test_inspect_text_names_the_dtypes(released, cli):
    assert "tensors (float32 " in cli("inspect", released["xs"][0]).out


def test_unreadable_file_outranks_a_mismatch(s_model_labeled_xs, tmp_path, cli):
    assert cli("inspect", s_model_labeled_xs, tmp_path / "none.tar").code == 2


def test_unknown_expected_variant_is_a_usage_error(s_model_labeled_xs, cli):
    run = cli("inspect", "--expect", "XXL", s_model_labeled_xs)
    assert run.code == 2 and "unknown variant" in run.err


@pytest.fixture
def json_rows(released, tmp_path, cli):
    """`cnp inspect --json` on the M file and on a file that does not exist."""
    return json.loads(cli("inspect", "--json", released["m"][0], tmp_path / "none.tar").out)


def test_json_has_the_documented_fields(json_rows):
    assert {"path", "format", "container", "member", "key_layout", "epoch", "inferred",
            "matched_variant", "expected_variant", "expected_from", "match", "differences",
            "tensors", "numel", "dtypes"} <= set(json_rows[0])


def test_json_reports_what_the_file_holds(json_rows, released):
    good = json_rows[0]
    assert (good["matched_variant"], good["match"], good["epoch"]) == ("m", True, 83)
    assert (good["inferred"]["head_upsample"], good["inferred"]["upsample_basis"]) == \
        (SPEC_PAGE["m"]["upsample"], "inferred")


def test_json_dtypes_count_the_tensors(json_rows, released):
    dtypes = json_rows[0]["dtypes"]
    assert sum(dtypes.values()) == len(released["m"][1]) and set(dtypes) == {"float32", "int64"}


def test_json_reports_an_unreadable_file_as_an_error_row(json_rows, tmp_path):
    assert json_rows[1] == {"path": str(tmp_path / "none.tar"), "error": "no such file"}


def test_joints_splits_the_final_layer(tiny_state, tmp_path):
    save_official(tiny_state, tmp_path / "a.tar")
    assert inspect(tmp_path / "a.tar", joint_num=9).inferred.depth_dim == 64


def test_joints_that_do_not_divide_the_final_layer_are_refused(tiny_state, tmp_path):
    save_official(tiny_state, tmp_path / "a.tar")
    with pytest.raises(CheckpointError, match="not a multiple of joint_num 7"):
        inspect(tmp_path / "a.tar", joint_num=7)


def test_command_line_points_at_joints_when_they_do_not_divide(tiny_state, tmp_path, cli):
    save_official(tiny_state, tmp_path / "a.tar")
    run = cli("inspect", "--joints", "7", tmp_path / "a.tar")
    assert run.code == 2 and "joint_num 7" in run.err and "--joints" in run.err


@pytest.mark.parametrize("command", ["inspect", "convert"])
@pytest.mark.parametrize("joints", ["0", "-2", "nine"])
def test_joints_must_be_a_positive_integer(command, joints, tmp_path, cli):
    paths = [tmp_path / "a.tar"] + ([tmp_path / "b.pth"] if command == "convert" else [])
    run = cli(command, *paths, "--joints", joints)
    assert run.code == 2 and run.out == "" and run.err.count("\n") == 1
    assert run.err.startswith("cnp: error: ") and f"expected a positive integer, got '{joints}'" in run.err


def test_api_refuses_a_joint_count_below_one(tiny_state):
    with pytest.raises(ValueError, match="joint_num must be a positive integer, got 0"):
        infer(from_state_dict(tiny_state), joint_num=0)


@pytest.mark.slow
def test_refusal_in_a_fresh_process_is_one_line_and_runs_nothing(tmp_path, tiny_state, cli_process):
    code, _ = _write_bad("code-in-archive", tmp_path, tiny_state)
    run = cli_process("inspect", code)
    assert run.code == 2 and run.out == "" and "Traceback" not in run.err
    assert run.err.startswith(f"cnp: error: {code}: refused: its pickle calls code") and run.err.count("\n") == 1
    assert not (tmp_path / "ran").exists()
