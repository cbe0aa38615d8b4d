"""`cnp export` and `cnp check-onnx`: exports round-trip, broken exports are caught.

Needs the `onnx` extra (CI installs it); without it this module is skipped. Each export is
made once per session (tests/onnx_exports.py): XS's in every run, S's, M's and L's are `slow`
(10-20 s of exporting each on a 2-core machine). The broken graphs are XS's export edited.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from importlib import metadata as package_metadata

import pytest
import torch

# Found, not imported: onnx's C++ extension aborts the process when imported a second time,
# which an in-process nested pytest run (tests/test_selection.py) would do. Tests import it.
if any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxruntime", "onnxscript")):
    pytest.skip("the 'onnx' extra is not installed", allow_module_level=True)

from cnp.checks import failed  # noqa: E402
from cnp.onnx_check import CHECKS, onnx_cases, report  # noqa: E402
from cnp.specs import VARIANTS  # noqa: E402
from cnp.testing import seeded_model  # noqa: E402
from onnx_exports import (EXPORTS_AHEAD, PLACEHOLDER, UMASK, Exports,  # noqa: E402
                          export_legacy, heatmaps_only, misaligned_xs)

# reads_export(v): the test reads v's export; tests/conftest.py starts the exports of S, M
# and L that the selected tests read in a background process as soon as they are collected.
EVERY_VARIANT = [pytest.param(v, id=v, marks=() if v == "xs" else [pytest.mark.slow,
                                                                   pytest.mark.reads_export(v)])
                 for v in VARIANTS]


@pytest.fixture(scope="session")
def exports(request, tmp_path_factory):
    ahead = request.config.stash.get(EXPORTS_AHEAD, None)  # started by tests/conftest.py
    return Exports(tmp_path_factory.mktemp("onnx")) if ahead is None else ahead


@pytest.fixture(scope="session")
def misaligned(exports, tmp_path_factory):
    """XS's export with align_corners=False in head layer 1 and nearest in head layer 2."""
    return misaligned_xs(exports["xs"].path, tmp_path_factory.mktemp("broken") / "xs.onnx")


def one_line_error(result) -> bool:
    lines = result.err.strip().splitlines()
    return (result.code == 2 and len(lines) == 1 and lines[0].startswith("cnp: error: ")
            and "Traceback" not in result.err)


def save_weights(model, path):
    torch.save(model.state_dict(), path)
    return path


# ---------------------------------------------------------------- round trips


def dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("variant", EVERY_VARIANT)
def test_export_round_trips(variant, exports, cli):
    """The export declares the interface of docs/onnx.md (input `image` (batch, 3, H, W),
    outputs `heatmaps` (batch, joints·depth, h, w) and `coords` (batch, joints, 3), batch
    symbolic) and check-onnx passes it. One test: under mutmut only the first test to use
    an export reaches the exporting code (the exports are made once per session)."""
    import onnx

    assert exports[variant].code == 0
    spec = VARIANTS[variant]
    graph = onnx.load(exports[variant].path).graph
    assert [(i.name, dims(i)) for i in graph.input] == [("image", ["batch", 3, *spec.input_size])]
    assert [(o.name, dims(o)) for o in graph.output] == [
        ("heatmaps", ["batch", spec.joint_num * spec.depth_dim, *spec.heatmap_size]),
        ("coords", ["batch", spec.joint_num, 3])]
    result = cli("check-onnx", exports[variant].path, "--json")
    data = json.loads(result.out)
    assert (result.code, data["variant"]) == (0, variant), result
    assert [(c["check"], c["ok"]) for c in data["checks"]] == [(name, True) for name in CHECKS]
    numerics = data["checks"][CHECKS.index("numerics")]["found"]
    assert {batch: sorted(ratios) for batch, ratios in numerics.items()} == {
        "batch_1": ["coords", "heatmaps"], "batch_4": ["coords", "heatmaps"]}


def test_upsampling_findings_name_the_spec_layers_xs(exports):
    """XS upsamples in head layers 1 and 2 (docs/spec.md: 2UP), ×2 bilinear, align_corners."""
    found = report(exports["xs"].path).checks[CHECKS.index("upsampling")].found
    assert [(f["layer"], f["mode"], f["coordinate_transformation_mode"], f["scale"])
            for f in found] == [("head.deconv_layers_1", "linear", "align_corners", [2.0, 2.0]),
                                ("head.deconv_layers_2", "linear", "align_corners", [2.0, 2.0])]


@pytest.mark.slow
def test_plugin_gates_a_folder_of_exports(exports, misaligned, pytester):
    """`pytest --cnp-onnx DIR` in a repository that is not cnp's: one test per file and
    check; the good XS export passes, the misaligned one fails its upsampling check."""
    folder = pytester.mkdir("exports")
    (folder / "pose_xs.onnx").write_bytes(exports["xs"].path.read_bytes())
    (folder / "broken_xs.onnx").write_bytes(misaligned.read_bytes())
    # In this process (no second torch import): pytester drops the modules a nested run
    # imported, and onnx's and onnxruntime's extensions abort a process that imports them
    # twice, so both are imported here first.
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    result = pytester.runpytest_inprocess("--cnp-onnx=exports", "-p", "no:cacheprovider", "-rA")
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("failed")) == (4 + 2, 2), result.stdout.str()
    result.stdout.fnmatch_lines(["*PASSED*test_export?xs-pose_xs.onnx-numerics*"])
    result.stdout.fnmatch_lines(["*FAILED*test_export?xs-broken_xs.onnx-upsampling*"])


# ---------------------------------------------------------------- writing the file


def test_export_force_replaces_a_file_honouring_the_umask_xs(exports):
    export = exports["xs"]
    assert export.replaced and export.code == 0
    assert export.path.read_bytes()[:len(PLACEHOLDER)] != PLACEHOLDER
    assert export.mode == 0o666 & ~UMASK
    assert [p.name for p in export.path.parent.iterdir() if p.name.startswith(".")] == []


def test_export_records_where_the_weights_came_from_xs(exports, tmp_path):
    from safetensors.torch import save_file

    from cnp.checkpoints import load
    from cnp.export import weights_sha256

    """sha256 as docs/onnx.md defines it: per state_dict entry, "name dtype shape\\n" then
    the bytes; the same for the weights read back from another file format."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(exports["xs"].path).metadata_props}
    state = seeded_model("xs").state_dict()
    digest = hashlib.sha256()
    for name, tensor in state.items():
        dtype = {torch.float32: "float32", torch.int64: "int64"}[tensor.dtype]
        digest.update(f"{name} {dtype} {','.join(map(str, tensor.shape))}\n".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    assert meta["cnp.version"] == package_metadata.version("cnp")
    assert (meta["cnp.variant"], meta["cnp.weights"]) == ("xs", "seeded:2023")
    assert meta["cnp.weights_sha256"] == digest.hexdigest()
    save_file(state, tmp_path / "xs.safetensors")
    assert weights_sha256(load(tmp_path / "xs.safetensors")) == digest.hexdigest()


def test_export_refuses_to_overwrite_without_force(cli, tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"keep me")
    result = cli("export", "xs", target)
    assert one_line_error(result) and "--force" in result.err
    assert target.read_bytes() == b"keep me"


@pytest.mark.parametrize("case", ["unknown-source", "not-convnextpose", "no-directory"])
def test_failed_export_creates_nothing(case, cli, tmp_path):
    source = {"unknown-source": "xxl", "no-directory": "xs",
              "not-convnextpose": tmp_path / "other.pth"}[case]
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    target = tmp_path / ("missing/model.onnx" if case == "no-directory" else "model.onnx")
    before = sorted(tmp_path.rglob("*"))
    assert one_line_error(cli("export", source, target))
    assert sorted(tmp_path.rglob("*")) == before


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    from cnp.errors import InputError
    from cnp.export import write_atomically

    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")

    def refuse(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", refuse)
    with pytest.raises(InputError, match="No space left"):
        write_atomically(b"new", target, force=True)
    assert [(p.name, p.read_bytes()) for p in tmp_path.iterdir()] == [("model.onnx", b"old")]


@pytest.mark.parametrize("command", ["export", "check-onnx"])
def test_without_the_extra_commands_say_so(command, cli, tmp_path, uninstalled):
    uninstalled("onnx", "onnxruntime", "onnxscript")
    args = ("xs", tmp_path / "x.onnx") if command == "export" else (tmp_path / "x.onnx",)
    result = cli(command, *args)
    assert one_line_error(result) and "pip install 'cnp[onnx]'" in result.err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cnp_imports_no_onnx_module(tmp_path):
    import subprocess
    import sys

    code = ("import sys, cnp, cnp.cli, cnp.cli_onnx, cnp.export, cnp.onnx_check, cnp.fast, "
            "cnp.bench; cnp.cli.make_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('onnx', 'onnxruntime', 'onnxscript')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------- unusable input


@pytest.mark.parametrize("case", ["text", "truncated", "missing", "directory", "checkpoint",
                                  "weights-not-convnextpose", "unknown-variant"])
def test_unusable_input_is_one_line_exit_2(case, exports, cli, tmp_path):
    onnx_file = exports["xs"].path
    target, extra = tmp_path / "model.onnx", ()
    if case == "text":
        target.write_text("ir_version: 8\n")
    elif case == "truncated":
        target.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])
    elif case == "directory":
        target.mkdir()
    elif case == "checkpoint":
        save_weights(seeded_model("xs"), target)
    elif case == "weights-not-convnextpose":
        target, extra = onnx_file, ("--weights", tmp_path / "other.pth")
        torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    elif case == "unknown-variant":
        target, extra = onnx_file, ("--variant", "xxl")
    result = cli("check-onnx", target, *extra)
    assert one_line_error(result), result


# ---------------------------------------------------------------- broken exports


@pytest.mark.parametrize("weights", ["xs-seed-7", "xs-with-s-weights"])
def test_other_weights_fail_the_numerics(weights, exports, tmp_path):
    model = seeded_model("xs", 7) if weights == "xs-seed-7" else seeded_model("s")
    checks = report(exports["xs"].path, weights=save_weights(model, tmp_path / "w.pth")).checks
    by_name = {c.check: c for c in checks}
    assert by_name["numerics"].ok is False
    assert by_name["upsampling"].ok is True


@pytest.mark.parametrize("graph, claimed", [
    pytest.param("xs", "s", id="xs-graph-as-s"),
    pytest.param("s", "xs", id="s-graph-as-xs",
                 marks=[pytest.mark.slow, pytest.mark.reads_export("s")]),
])
def test_another_variants_graph_fails_the_variant_check(graph, claimed, exports):
    check = {c.check: c for c in report(exports[graph].path, variant=claimed).checks}["variant"]
    spec = VARIANTS[graph].backbone
    assert check.ok is False
    assert (check.found["variant"], check.found["depths"], check.found["dims"]) == (
        graph, list(spec.depths), list(spec.dims))


def test_numerics_without_weights_are_not_checked_xs(exports, tmp_path):
    import onnx

    model = onnx.load(exports["xs"].path)
    del model.metadata_props[:]
    onnx.save(model, tmp_path / "xs.onnx")
    check = {c.check: c for c in report(tmp_path / "xs.onnx").checks}["numerics"]
    assert (check.ok, check.status) == (None, "not checked") and "--weights" in check.detail


def test_align_corners_false_in_one_layer_fails_xs(misaligned):
    checks = {c.check: c for c in report(misaligned).checks}
    first = checks["upsampling"].found[0]
    assert (first["layer"], first["mode"]) == ("head.deconv_layers_1", "linear")
    assert first["coordinate_transformation_mode"] != "align_corners"
    assert "in head.deconv_layers_1: coordinate_transformation_mode" in checks["upsampling"].detail
    assert checks["upsampling"].ok is False and checks["numerics"].ok is False


def test_nearest_in_one_layer_fails_xs(misaligned):
    checks = {c.check: c for c in report(misaligned).checks}
    second = checks["upsampling"].found[1]
    assert (second["layer"], second["mode"]) == ("head.deconv_layers_2", "nearest")
    assert "in head.deconv_layers_2: mode nearest" in checks["upsampling"].detail
    assert checks["upsampling"].ok is False and checks["numerics"].ok is False


def test_heatmaps_only_graph_passes_on_its_heatmaps_xs(exports, tmp_path):
    path = heatmaps_only(exports["xs"].path, tmp_path / "xs.onnx")
    checks = {c.check: c for c in report(path).checks}
    assert checks["structure"].found["has"] == "heatmaps"
    assert not failed(checks.values())
    assert {batch: sorted(r) for batch, r in checks["numerics"].found.items()} == {
        "batch_1": ["heatmaps"], "batch_4": ["heatmaps"]}


@pytest.mark.slow
def test_legacy_exporter_opset_11_graph_passes_xs(tmp_path):
    model = seeded_model("xs")
    path = export_legacy(model, tmp_path / "xs.onnx", opset=11)
    checks = report(path, weights=save_weights(model, tmp_path / "xs.pth")).checks
    assert [(c.check, c.ok) for c in checks] == [(name, True) for name in CHECKS]


# ---------------------------------------------------------------- plugin cases


def test_onnx_cases_are_selectable_by_variant(tmp_path):
    for name in ("ConvNeXtPose_XS.onnx", "model-s.onnx", "m_best.onnx", "exported.onnx",
                 "xs_notes.txt"):
        (tmp_path / name).write_bytes(b"")
    ids = sorted(case_id for case_id, _ in onnx_cases(tmp_path))
    assert ids == ["m-m_best.onnx", "s-model-s.onnx", "unlabeled-exported.onnx",
                   "xs-ConvNeXtPose_XS.onnx"]
    assert [i for i in ids if "xs" in i.lower()] == ["xs-ConvNeXtPose_XS.onnx"]


# ---------------------------------------------------------------- the text of check-onnx


def headline(result) -> tuple[str, str, str]:
    """`PATH: VERDICT: checked against VARIANT`, the first line of check-onnx's report, as
    (path, verdict, variant)."""
    path, verdict, against = result.out.splitlines()[0].rsplit(": ", 2)
    return path, verdict, against.removeprefix("checked against ")


def check_lines(result) -> dict[str, list[str]]:
    """check name → the words of its line (status, then detail)."""
    return {line.split()[0]: line.split()[1:] for line in result.out.splitlines()[1:]}


def test_check_onnx_text_of_a_good_export_xs(exports, cli):
    result = cli("check-onnx", exports["xs"].path)
    assert result.code == 0
    assert headline(result) == (str(exports["xs"].path), "ok", "XS")
    assert list(check_lines(result)) == list(CHECKS)
    assert all(words[0] == "pass" for words in check_lines(result).values())


def test_check_onnx_text_counts_what_was_not_checked_xs(exports, cli, tmp_path):
    """Without cnp's metadata the file names no weights: the numerics are not checked, and
    the headline says how many checks were not (the variant is read off the graph)."""
    import onnx

    model = onnx.load(exports["xs"].path)
    del model.metadata_props[:]
    onnx.save(model, tmp_path / "xs.onnx")
    result = cli("check-onnx", tmp_path / "xs.onnx")
    unchecked = [name for name, words in check_lines(result).items()
                 if words[:2] == ["not", "checked"]]
    assert "numerics" in unchecked
    _, verdict, variant = headline(result)
    assert (result.code, verdict, variant) == (0, f"ok ({len(unchecked)} not checked)", "XS")


def test_check_onnx_text_of_a_graph_of_no_variant(cli, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 256, 256])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 256, 256])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "g",
                              [image], [out])
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    result = cli("check-onnx", tmp_path / "other.onnx")
    assert (result.code, headline(result)[1:]) == (1, ("FAIL (2 not checked)", "no variant"))


def test_check_onnx_text_of_a_broken_export_fails_xs(misaligned, cli):
    result = cli("check-onnx", misaligned)
    assert (result.code, headline(result)) == (1, (str(misaligned), "FAIL", "XS"))
    assert check_lines(result)["upsampling"][0] == "fail"


# ---------------------------------------------------------------- what `cnp export` passes on


@pytest.fixture
def recorded_exports(monkeypatch):
    """cnp.export.export_onnx replaced by a recorder: what `cnp export` asks of it, without
    the seconds of a real export (test_export_round_trips makes real ones)."""
    calls = []

    def record(model, target, *, opset=None, metadata=None, force=False):
        calls.append({"variant": model.spec.name, "target": target, "opset": opset,
                      "metadata": metadata, "force": force})
        return target

    monkeypatch.setattr("cnp.export.export_onnx", record)
    return calls


def test_export_of_a_checkpoint_records_its_file_and_options(recorded_exports, cli, tmp_path):
    weights = save_weights(seeded_model("xs"), tmp_path / "mine.pth")
    target = tmp_path / "old.onnx"
    target.write_bytes(b"an older export")
    result = cli("export", weights, target, "--force", "--opset", "18")
    assert result.code == 0, result
    (call,) = recorded_exports
    assert (call["variant"], call["target"], call["opset"], call["force"]) == (
        "xs", target, 18, True)
    assert call["metadata"]["cnp.weights"] == "checkpoint:mine.pth"
    assert result.out.split()[:2] == ["wrote", str(target)]
    assert "XS" in result.out.split(str(target))[1] and "checkpoint mine.pth" in result.out


def test_export_of_a_variant_name_ignores_case_and_spaces(recorded_exports, cli, tmp_path):
    assert cli("export", " XS ", tmp_path / "xs.onnx").code == 0
    (call,) = recorded_exports
    assert (call["variant"], call["opset"], call["metadata"]["cnp.weights"]) == (
        "xs", None, "seeded:2023")


def test_export_refuses_to_write_over_its_input(recorded_exports, cli, tmp_path):
    weights = save_weights(seeded_model("xs"), tmp_path / "xs.pth")
    result = cli("export", weights, weights, "--force")
    assert one_line_error(result) and str(weights) in result.err and "input" in result.err
    assert recorded_exports == [] and list(tmp_path.iterdir()) == [weights]


def test_export_names_a_source_that_is_neither_file_nor_variant(cli, tmp_path):
    result = cli("export", "xxl", tmp_path / "x.onnx")
    assert one_line_error(result) and "xxl" in result.err
    assert all(name in result.err for name in VARIANTS)


# the id "onnx-script": `pytest -k xs` would select "onnxscript"
@pytest.mark.parametrize("missing", ["onnx", "onnxscript"], ids=["onnx", "onnx-script"])
def test_export_says_a_missing_module_before_reading_its_source(missing, cli, tmp_path,
                                                                 uninstalled):
    uninstalled(missing)
    result = cli("export", "xxl", tmp_path / "x.onnx")
    assert one_line_error(result) and f"{missing}: not installed" in result.err
    assert "xxl" not in result.err
