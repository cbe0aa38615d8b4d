"""cnp.export's parts, without the seconds of a real export: what cnp asks of torch's
exporter and what it refuses, where it writes, how it opens ONNX Runtime.
(tests/test_onnx.py runs real exports and checks what they compute.)"""

from __future__ import annotations

import importlib.util
import os
from importlib import metadata
from types import SimpleNamespace

import pytest
import torch

if any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxruntime", "onnxscript")):
    pytest.skip("the 'onnx' extra is not installed", allow_module_level=True)

from cnp import export  # noqa: E402
from cnp.errors import InputError  # noqa: E402
from cnp.model import build  # noqa: E402
from cnp.specs import VARIANTS  # noqa: E402
from cnp.testing import seeded_model  # noqa: E402


def identity_model(opset: int = 18):
    """A one-node ONNX model (image → heatmaps) written at `opset`."""
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 2, 2])
    out = helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [1, 3, 2, 2])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["heatmaps"])], "g",
                              [image], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.fixture
def exporter(monkeypatch):
    """torch.onnx.export replaced: `calls` keeps what each call asked (its keywords, the
    module and the example args); it returns `proto`, by default a one-node opset-18 model."""
    recorder = SimpleNamespace(calls=[], proto=identity_model(18))

    def export_(module, args, **kwargs):
        recorder.calls.append({**kwargs, "module": module, "args": args})
        return SimpleNamespace(model_proto=recorder.proto)

    monkeypatch.setattr(torch.onnx, "export", export_)
    return recorder


@pytest.mark.parametrize("domain", ["", "ai.onnx"])
def test_the_default_domain_is_read_by_either_name(domain, exporter):
    """ONNX names its default operator set "" or "ai.onnx"."""
    from onnx import helper

    del exporter.proto.opset_import[:]
    exporter.proto.opset_import.extend([helper.make_opsetid(domain, 18),
                                        helper.make_opsetid("com.microsoft", 1)])
    assert export.to_onnx(build(VARIANTS["xs"]), opset=18) is exporter.proto


def test_an_opset_the_exporter_did_not_write_is_refused(exporter):
    with pytest.raises(InputError) as refused:
        export.to_onnx(build(VARIANTS["xs"]), opset=11)
    assert refused.value.path == "--opset 11" and "18" in refused.value.problem
    assert [call["opset_version"] for call in exporter.calls] == [11]


def test_export_onnx_passes_the_opset_and_records_cnp_version(exporter, tmp_path):
    import onnx

    path = export.export_onnx(build(VARIANTS["xs"]), tmp_path / "x.onnx", opset=18,
                              metadata={"cnp.weights": "seeded:1"})
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert [call["opset_version"] for call in exporter.calls] == [18]
    assert meta == {"cnp.version": metadata.version("cnp"), "cnp.weights": "seeded:1"}


def test_to_onnx_asks_for_the_dynamo_exporter_quietly(exporter):
    """dynamo=True and verbose=False whatever the installed torch's defaults (before torch
    2.9 the default exporter was the TorchScript one)."""
    export.to_onnx(build(VARIANTS["xs"]))
    (export_call,) = exporter.calls
    assert export_call["dynamo"] is True and export_call["verbose"] is False
    assert export_call["input_names"] == ["image"]
    batch = export_call["dynamic_shapes"]["image"][0]
    assert batch.min == 1 and export_call["args"][0].shape[0] > 1  # batch 1 would specialize


@pytest.mark.parametrize("coords", [True, False], ids=["coords", "heatmaps-only"])
def test_to_onnx_exports_coords_unless_told_not_to(coords, exporter):
    model = seeded_model("xs")
    export.to_onnx(model, **({} if coords else {"coords": False}))
    (export_call,) = exporter.calls
    outputs = export_call["module"](export_call["args"][0])
    heatmaps = model.heatmaps(export_call["args"][0])
    if coords:
        assert export_call["output_names"] == ["heatmaps", "coords"]
        assert torch.equal(outputs[0], heatmaps)
        assert outputs[1].shape == (export.EXPORT_BATCH, VARIANTS["xs"].joint_num, 3)
    else:
        assert export_call["output_names"] == ["heatmaps"]
        assert torch.equal(outputs, heatmaps)


def test_export_onnx_passes_coords_on(exporter, tmp_path):
    export.export_onnx(build(VARIANTS["xs"]), tmp_path / "x.onnx", coords=False)
    assert [call["output_names"] for call in exporter.calls] == [["heatmaps"]]


def test_the_exported_module_computes_heatmaps_and_coords_by_default():
    model = seeded_model("xs")
    image = torch.rand(1, 3, *VARIANTS["xs"].input_size)
    heatmaps, coords = export.Exported(model)(image)
    assert torch.equal(heatmaps, model.heatmaps(image))
    assert torch.equal(coords, model(image))


# the id "onnx-script": `pytest -k xs` would select "onnxscript"
@pytest.mark.parametrize("missing", ["onnx", "onnxscript"], ids=["onnx", "onnx-script"])
def test_to_onnx_names_each_missing_module(missing, exporter, uninstalled):
    uninstalled(missing)
    with pytest.raises(InputError) as refused:
        export.to_onnx(build(VARIANTS["xs"]))
    assert refused.value.path == missing and exporter.calls == []


def test_export_onnx_keeps_an_existing_file_by_default(exporter, tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"keep")
    with pytest.raises(InputError, match="--force"):
        export.export_onnx(build(VARIANTS["xs"]), tmp_path / "x.onnx")
    assert exporter.calls == [] and (tmp_path / "x.onnx").read_bytes() == b"keep"


@pytest.mark.parametrize("case", ["directory", "exists", "no-parent"])
def test_check_target_names_the_target_and_the_problem(case, tmp_path):
    target = {"directory": tmp_path, "exists": tmp_path / "x.onnx",
              "no-parent": tmp_path / "missing" / "x.onnx"}[case]
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(InputError) as refused:
        export.check_target(target)
    fact = {"directory": "directory", "exists": "--force",
            "no-parent": repr(str(tmp_path / "missing"))}[case]
    assert refused.value.path == str(target) and fact in refused.value.problem


def test_write_atomically_keeps_an_existing_file_by_default(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"keep")
    with pytest.raises(InputError, match="--force"):
        export.write_atomically(b"new", tmp_path / "x.onnx")
    assert [(p.name, p.read_bytes()) for p in tmp_path.iterdir()] == [("x.onnx", b"keep")]


def test_a_new_file_gets_mode_0o666_under_umask_0(tmp_path):
    previous = os.umask(0)
    try:
        path = export.write_atomically(b"new", tmp_path / "x.onnx")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666


def test_a_failed_write_names_the_target(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(InputError) as refused:
        export.write_atomically(b"new", tmp_path / "x.onnx")
    assert refused.value.path == str(tmp_path / "x.onnx")


def test_cnp_version_is_the_installed_one_or_unknown(monkeypatch):
    assert export.cnp_version() == metadata.version("cnp")

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(export.package_metadata, "version", not_installed)
    assert export.cnp_version() == "unknown"


def test_require_names_every_missing_module():
    with pytest.raises(InputError) as refused:
        export.require("onnx", "no_such_module_a", "no_such_module_b")
    assert "no_such_module_a" in refused.value.path and "no_such_module_b" in refused.value.path
    assert "onnx" not in refused.value.path.replace("no_such", "")


def test_seeded_is_the_golden_seeded_model():
    golden = seeded_model("xs", 7).state_dict()
    for name, tensor in export.seeded("xs", 7).state_dict().items():
        assert torch.equal(tensor, golden[name]), name


@pytest.mark.parametrize("source", ["path", "bytes"])
def test_inference_session_runs_a_file_or_bytes_on_the_cpu(source, tmp_path):
    import onnx

    onnx.save(identity_model(), tmp_path / "m.onnx")
    model = tmp_path / "m.onnx" if source == "path" else (tmp_path / "m.onnx").read_bytes()
    session = export.inference_session(model, threads=3)  # the suite runs torch on 1
    image = torch.rand(1, 3, 2, 2).numpy()
    assert (session.run(None, {"image": image})[0] == image).all()
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 3


def test_inference_session_asks_for_the_cpu_by_name(monkeypatch):
    """Left to itself, onnxruntime-gpu would take CUDA first."""
    import onnxruntime

    asked = {}
    monkeypatch.setattr(onnxruntime, "InferenceSession",
                        lambda source, options, **kwargs: asked.update(kwargs, source=source))
    export.inference_session(b"model")
    assert asked == {"source": b"model", "providers": ["CPUExecutionProvider"]}


def test_session_options_never_spin():
    """Spinning intra-op threads would take the cores from the next interleaved backend."""
    options = export.session_options(threads=3)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 3
    assert options.log_severity_level == 3  # onnxruntime's ERROR: warnings are not shown
