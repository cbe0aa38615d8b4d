"""Checkpoint files: what they hold is read off their tensors, never off their names."""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import zipfile

import pytest
import torch
from safetensors.torch import save_file

import cnp
from cnp import CheckpointError, VARIANTS
from cnp.checkpoints import fingerprint, from_state_dict, infer, inspect, load, read
from cnp.cli import main
from checkpoint_files import POSITIONAL_HEAD_VARIANTS, TINY, RunsCode, official_state, save_official

from spec_page import SPEC_PAGE  # the variants table of docs/spec.md


# ---------------------------------------------------------------- the released form


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
def test_architecture_inferred_from_tensors_is_the_spec_page(released, variant):
    inferred = inspect(released[variant][0]).inferred
    page = SPEC_PAGE[variant]
    assert list(inferred.depths) == page["depths"]
    assert list(inferred.dims) == page["dims"]
    assert list(inferred.head_channels) == page["head"]
    assert inferred.depth_dim == page["depth_dim"]
    assert inferred.final_out == 18 * page["depth_dim"]
    assert (inferred.kernel, list(inferred.head_kernels)) == (7, [3, 3, 3])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_upsampling_is_inferred_never_measured(released, variant):
    inferred = inspect(released[variant][0]).inferred
    assert list(inferred.head_upsample) == SPEC_PAGE[variant]["upsample"]
    assert inferred.upsample_basis == "inferred"
    assert "cubic-volume convention" in inferred.upsample_reason


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_released_file_matches_its_label(released, variant):
    path, state = released[variant]
    report = inspect(path)
    assert (report.matched_variant, report.expected_variant, report.expected_from) == \
        (variant, variant, "file name")
    assert report.match and report.differences == ()
    assert (report.format, report.epoch) == ("torch-zip", 83)
    assert report.key_layout.wrapper == "network" and report.key_layout.prefixes == ("module.",)
    assert report.key_layout.head_keys == ("positional" if variant in POSITIONAL_HEAD_VARIANTS else "named")
    assert (report.tensors, report.numel) == (len(state), sum(t.numel() for t in state.values()))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_load_restores_every_tensor_bit_exact(released, variant):
    path, state = released[variant]
    model = cnp.load(path)
    assert model.spec.name == variant and not model.training
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) and loaded[k].dtype == state[k].dtype for k in state)


# ---------------------------------------------------------------- a mislabeled file


@pytest.fixture
def s_model_labeled_xs(released, tmp_path):
    return save_official(released["s"][1], tmp_path / "ConvNeXtPose_XS.tar")


def test_file_labeled_xs_holding_s_is_reported_as_s(s_model_labeled_xs):
    report = inspect(s_model_labeled_xs)
    assert (report.matched_variant, report.expected_variant, report.match) == ("s", "xs", False)
    found = {d.check: (d.expected, d.found) for d in report.differences}
    assert found == {
        "backbone.depths": (SPEC_PAGE["xs"]["depths"], SPEC_PAGE["s"]["depths"]),
        "backbone.dims": (SPEC_PAGE["xs"]["dims"], SPEC_PAGE["s"]["dims"]),
        "head.channels": (SPEC_PAGE["xs"]["head"], SPEC_PAGE["s"]["head"]),
    }


def test_file_labeled_xs_holding_s_exits_1(s_model_labeled_xs, capsys):
    assert main(["inspect", str(s_model_labeled_xs)]) == 1
    assert "MISMATCH: holds S (expected XS" in capsys.readouterr().out


def test_load_of_file_labeled_xs_gives_the_s_model_it_holds(s_model_labeled_xs):
    assert cnp.load(s_model_labeled_xs).spec.name == "s"
    with pytest.raises(CheckpointError, match="does not hold xs"):
        cnp.load(s_model_labeled_xs, "xs")


def test_expect_overrides_the_file_name(released):
    report = inspect(released["m"][0], expect="l")
    assert (report.matched_variant, report.expected_variant, report.expected_from) == ("m", "l", "argument")
    assert [d.check for d in report.differences] == ["head.channels"]


# ---------------------------------------------------------------- other layouts


def _layouts(state):
    """name → (file name, how to write it, expected format, wrapper, prefixes, head keys)."""
    official = official_state(state)
    return {
        "official-positional": ("a.tar", lambda p: save_official(state, p, positional_head=True),
                                "torch-zip", "network", ("module.",), "positional"),
        "legacy-format": ("a.pth.tar", lambda p: torch.save({"epoch": 3, "network": official}, p,
                                                          _use_new_zipfile_serialization=False),
                          "torch-legacy", "network", ("module.",), "named"),
        "safetensors": ("a.safetensors", lambda p: save_file(dict(state), p),
                        "safetensors", None, (), "named"),
        "state_dict-wrapper": ("a.pth", lambda p: torch.save({"state_dict": state}, p),
                               "torch-zip", "state_dict", (), "named"),
        "model-wrapper": ("a.pth", lambda p: torch.save({"model": state}, p),
                          "torch-zip", "model", (), "named"),
        "bare": ("a.pt", lambda p: torch.save(state, p), "torch-zip", None, (), "named"),
        "compiled": ("a.pth", lambda p: torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, p),
                     "torch-zip", None, ("_orig_mod.",), "named"),
        "compiled-dataparallel": ("a.pth", lambda p: torch.save(
            {f"module._orig_mod.{k}": v for k, v in state.items()}, p),
            "torch-zip", None, ("module.", "_orig_mod."), "named"),
    }


LAYOUTS = list(_layouts({}))


@pytest.fixture(params=LAYOUTS)
def tiny_file(request, tiny_state, tmp_path):
    name, write, *layout = _layouts(tiny_state)[request.param]
    path = tmp_path / name
    write(path)
    return path, layout


def test_every_layout_is_read(tiny_file):
    path, (fmt, wrapper, prefixes, head_keys) = tiny_file
    report = inspect(path)
    assert report.format == fmt
    assert (report.key_layout.wrapper, report.key_layout.prefixes, report.key_layout.head_keys) == \
        (wrapper, prefixes, head_keys)
    assert report.inferred.spec("tiny") == TINY


def test_every_layout_loads_bit_exact(tiny_file, tiny_state):
    loaded = load(tiny_file[0]).state_dict()
    assert list(loaded) == list(tiny_state)
    assert all(torch.equal(loaded[k], tiny_state[k]) for k in tiny_state)


def test_unknown_architecture_matches_no_variant(tiny_file):
    report = inspect(tiny_file[0])
    assert report.expected_variant is None and not report.match
    assert "backbone.dims" in {d.check for d in report.differences}


def _mapped_ranges(path):
    """Address ranges where this process maps `path` (Linux /proc/self/maps)."""
    ranges = []
    for line in open("/proc/self/maps"):
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(path):
            start, end = (int(v, 16) for v in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_tensors_stay_in_the_mapped_file_until_touched(tiny_state, tmp_path):
    path = save_official(tiny_state, tmp_path / "a.tar")
    contents = read(path)
    ranges = _mapped_ranges(path.resolve())
    pointers = [t.untyped_storage().data_ptr() for t in contents.tensors().values()]
    # Every storage points into the file's memory map: nothing was copied into memory,
    # so reading the tensor table read no tensor data.
    assert ranges and all(any(a <= p < b for a, b in ranges) for p in pointers)


# ---------------------------------------------------------------- values


def test_nonfinite_weights_are_reported(tiny_state, tmp_path):
    state = dict(tiny_state)
    weight = state["head.final_layer.weight"].clone()
    weight[0, 0, 0, 0], weight[1, 0, 0, 0] = float("nan"), float("inf")
    state["head.final_layer.weight"] = weight
    save_official(state, tmp_path / "a.tar")
    report = inspect(tmp_path / "a.tar", fingerprints=True)
    assert report.scan.nonfinite == {"head.final_layer.weight": 2}
    assert ("values.nonfinite", {"head.final_layer.weight": 2}, "measured") in \
        [(d.check, d.found, d.basis) for d in report.differences]
    assert inspect(tmp_path / "a.tar").scan is None  # without fingerprints no data is read


def test_fingerprint_is_the_sha256_of_the_bytes():
    import hashlib

    tensor = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    assert fingerprint(tensor) == hashlib.sha256(tensor.numpy().tobytes()).hexdigest()
    assert fingerprint(tensor.t()) == hashlib.sha256(tensor.t().contiguous().numpy().tobytes()).hexdigest()


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
        return path, "damaged or truncated PyTorch zip archive"
    if kind == "truncated-safetensors":
        path = path.with_suffix(".safetensors")
        save_file(dict(tiny_state), path)
        path.write_bytes(path.read_bytes()[:-100])
        return path, "damaged safetensors file"
    if kind == "random-bytes":
        path.write_bytes(random.Random(0).randbytes(4096))
        return path, "not a PyTorch or safetensors checkpoint"
    if kind == "text":
        path.write_text("epoch: 83\nnetwork: none\n")
        return path, "not a PyTorch or safetensors checkpoint"
    if kind == "code-in-archive":
        torch.save({"epoch": 1, "network": RunsCode(tmp_path / "ran")}, path)
        return path, "refused"
    if kind == "code-in-pickle":
        path.write_bytes(pickle.dumps(RunsCode(tmp_path / "ran"), protocol=2))
        return path, "refused"
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


BAD = ["missing", "directory", "empty", "truncated-archive", "truncated-safetensors", "random-bytes",
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
def test_bad_input_exits_2_with_one_line(kind, tmp_path, tiny_state, capsys):
    path, problem = _write_bad(kind, tmp_path, tiny_state)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"cnp: error: {path}: ") and problem in err


@pytest.mark.parametrize("kind", ["code-in-archive", "code-in-pickle"])
def test_code_in_a_file_is_never_run(kind, tmp_path, tiny_state):
    path, _ = _write_bad(kind, tmp_path, tiny_state)
    with pytest.raises(CheckpointError):
        inspect(path)
    with pytest.raises(CheckpointError):
        load(path)
    assert not (tmp_path / "ran").exists()


def test_the_code_payload_is_live(tmp_path):
    """Guard for the test above: plain unpickling does run the payload."""
    pickle.loads(pickle.dumps(RunsCode(tmp_path / "ran"))).close()
    assert (tmp_path / "ran").exists()


# ---------------------------------------------------------------- the command line


def test_inspect_exits_0_when_every_file_matches(released, capsys):
    assert main(["inspect", *(str(released[v][0]) for v in VARIANTS)]) == 0
    assert capsys.readouterr().out.count(": ok: holds") == len(VARIANTS)


def test_unreadable_file_outranks_a_mismatch(s_model_labeled_xs, tmp_path):
    assert main(["inspect", str(s_model_labeled_xs), str(tmp_path / "none.tar")]) == 2


def test_unknown_expected_variant_is_a_usage_error(s_model_labeled_xs, capsys):
    assert main(["inspect", "--expect", "XXL", str(s_model_labeled_xs)]) == 2
    assert "unknown variant" in capsys.readouterr().err


def test_json_has_the_documented_fields(released, tmp_path, capsys):
    main(["inspect", "--json", str(released["m"][0]), str(tmp_path / "none.tar")])
    good, bad = json.loads(capsys.readouterr().out)
    assert {"path", "format", "key_layout", "epoch", "inferred", "matched_variant", "expected_variant",
            "match", "differences", "tensors", "numel"} <= set(good)
    assert (good["matched_variant"], good["match"], good["epoch"]) == ("m", True, 83)
    assert good["inferred"]["head_upsample"] == [2, 2, 2] and good["inferred"]["upsample_basis"] == "inferred"
    assert bad == {"path": str(tmp_path / "none.tar"), "error": "no such file"}


def test_joints_splits_the_final_layer(tiny_state, tmp_path):
    save_official(tiny_state, tmp_path / "a.tar")
    assert inspect(tmp_path / "a.tar", joint_num=9).inferred.depth_dim == 64
    with pytest.raises(CheckpointError, match="not a multiple of joint_num 7"):
        inspect(tmp_path / "a.tar", joint_num=7)


@pytest.mark.parametrize("command", ["inspect", "convert"])
@pytest.mark.parametrize("joints", ["0", "-2", "nine"])
def test_joints_must_be_a_positive_integer(command, joints, tmp_path, capsys):
    paths = [str(tmp_path / "a.tar")] + ([str(tmp_path / "b.pth")] if command == "convert" else [])
    assert main([command, *paths, "--joints", joints]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("cnp: error: ") and f"expected a positive integer, got '{joints}'" in err


def test_api_refuses_a_joint_count_below_one(tiny_state):
    with pytest.raises(ValueError, match="joint_num must be a positive integer, got 0"):
        infer(from_state_dict(tiny_state), joint_num=0)


@pytest.mark.slow
def test_command_in_a_fresh_process_exits_2_with_one_line_and_runs_nothing(s_model_labeled_xs, tmp_path, tiny_state):
    code, _ = _write_bad("code-in-archive", tmp_path, tiny_state)
    run = subprocess.run([sys.executable, "-m", "cnp.cli", "inspect", str(s_model_labeled_xs), str(code)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.startswith(f"cnp: error: {code}: refused: its pickle calls code")
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "MISMATCH: holds S (expected XS" in run.stdout
    assert not (tmp_path / "ran").exists()


# ---------------------------------------------------------------- convert


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_convert_writes_the_official_state_dict(suffix, tiny_state, tmp_path):
    source = save_official(tiny_state, tmp_path / "a.tar", positional_head=True)
    assert main(["convert", str(source), str(tmp_path / f"b{suffix}")]) == 0
    report = inspect(tmp_path / f"b{suffix}")
    assert (report.key_layout.wrapper, report.key_layout.prefixes, report.key_layout.head_keys) == \
        (None, (), "named")
    converted = read(tmp_path / f"b{suffix}").tensors()
    assert sorted(converted) == sorted(tiny_state)  # safetensors orders keys by name
    assert all(torch.equal(converted[k], tiny_state[k]) for k in tiny_state)


def test_convert_refuses_to_overwrite_without_force(tiny_state, tmp_path, capsys):
    source = save_official(tiny_state, tmp_path / "a.tar")
    target = tmp_path / "b.pth"
    target.write_bytes(b"precious")
    assert main(["convert", str(source), str(target)]) == 2
    assert target.read_bytes() == b"precious"
    assert capsys.readouterr().err == f"cnp: error: {target}: exists; pass --force to overwrite it\n"
    assert main(["convert", "--force", str(source), str(target)]) == 0
    assert read(target).format == "torch-zip"


@pytest.mark.parametrize("target", ["b.onnx", "a.tar"])
def test_convert_refuses_unknown_format_and_its_own_input(target, tiny_state, tmp_path):
    source = save_official(tiny_state, tmp_path / "a.tar")
    before = source.read_bytes()
    assert main(["convert", "--force", str(source), str(tmp_path / target)]) == 2
    assert source.read_bytes() == before
