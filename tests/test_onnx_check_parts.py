"""cnp.onnx_check's checks on small hand-made graphs, one flaw each: what `cnp check-onnx`
reports for a graph that is wrong in a way no export of cnp's would be.
(tests/test_onnx.py checks real exports end to end.)"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy
import pytest

if any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxruntime")):
    pytest.skip("the 'onnx' extra is not installed", allow_module_level=True)

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cnp import onnx_check, onnx_graph  # noqa: E402
from cnp.errors import InputError  # noqa: E402
from cnp.onnx_check import Reference  # noqa: E402
from cnp.specs import VARIANTS  # noqa: E402
from cnp.testing import ATOL, RTOL, seeded_model  # noqa: E402
from tiny_graphs import TINY, conv_graph, conv_specs, tiny, with_resizes  # noqa: E402

XS = VARIANTS["xs"]
CHANNELS = XS.joint_num * XS.depth_dim
STRIDE = XS.input_size[0] // XS.heatmap_size[0]  # one strided conv: image → heatmap size


def graph(image=("N", 3, *XS.input_size), channels=CHANNELS, stride=STRIDE, name="heatmaps",
          weight=None, extra_input=False, op="Conv"):
    """image → one strided Conv → `name`: a heatmaps-shaped output for XS unless told
    otherwise. Its numbers are not XS's: numerics fail, by how much is measured."""
    size = [d // stride if isinstance(d, int) else d for d in image[2:]]
    out_shape = [image[0], channels, *size]
    rng = numpy.random.default_rng(0)
    kernel = (rng.standard_normal((channels, image[1], stride, stride)) * 0.01
              if weight is None else numpy.full((channels, image[1], stride, stride), weight))
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(image))]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, list(image)))
    node = helper.make_node(op, ["image", "w"], [name], strides=[stride, stride])
    proto = helper.make_graph(
        [node], "g", inputs, [helper.make_tensor_value_info(name, TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(kernel.astype(numpy.float32), "w")])
    return helper.make_model(proto, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def rank_two_output():
    """image → ReduceMean over H and W → `features` (N, 3): neither heatmaps nor coords."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, *XS.input_size])
    out = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3])
    node = helper.make_node("ReduceMean", ["image"], ["features"], axes=[2, 3], keepdims=0)
    return helper.make_model(helper.make_graph([node], "g", [image], [out]),
                             opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def structure(model):
    check = onnx_check.check_structure(model, XS)
    return check, check.detail.split("; ")


# ---------------------------------------------------------------- structure


def test_a_graph_of_the_variants_shapes_has_a_good_structure():
    check, _ = structure(graph())
    assert check.ok is True
    assert check.found == {"checker": "pass", "inputs": {"image": "Nx3x256x256"},
                           "batch": "dynamic", "outputs": {"heatmaps": f"Nx{CHANNELS}x32x32"},
                           "has": "heatmaps"}
    assert "heatmaps Nx576x32x32" in check.detail and "(dynamic batch)" in check.detail


def with_coords(model):
    """`model` (heatmaps out) plus a `coords` output (N, joints, 3): the first three values
    of each joint's heatmaps, so shapes are right and numbers are not."""
    shape = numpy_helper.from_array(numpy.array([0, XS.joint_num, -1], numpy.int64), "shape")
    first_three = [numpy_helper.from_array(numpy.array([v], numpy.int64), n)
                   for n, v in (("zero", 0), ("three", 3), ("two", 2))]
    model.graph.node.extend([
        helper.make_node("Reshape", ["heatmaps", "shape"], ["joints"]),
        helper.make_node("Slice", ["joints", "zero", "three", "two"], ["coords"])])
    model.graph.initializer.extend([shape, *first_three])
    model.graph.output.append(
        helper.make_tensor_value_info("coords", TensorProto.FLOAT, ["N", XS.joint_num, 3]))
    return model


def test_heatmaps_and_coords_of_the_variants_shapes_are_what_it_expects():
    check, _ = structure(with_coords(graph()))
    assert check.ok is True and check.found["has"] == "heatmaps and coords"
    assert sorted(check.expected) == ["batch", "checker", "inputs", "outputs"]
    assert {k: check.expected[k] for k in ("checker", "batch")} == {
        k: check.found[k] for k in ("checker", "batch")}
    assert f"heatmaps Nx{CHANNELS}x32x32" in check.expected["outputs"]
    assert f"coords Nx{XS.joint_num}x3" in check.expected["outputs"]
    assert check.found["outputs"] == {"heatmaps": f"Nx{CHANNELS}x32x32",
                                      "coords": f"Nx{XS.joint_num}x3"}


def test_sizes_left_symbolic_are_not_held_against_the_graph():
    """A height, or heatmap channels, left symbolic by the exporter: only sizes the graph
    fixes are compared with the variant's."""
    model = graph()
    image, heatmaps = model.graph.input[0].type.tensor_type, model.graph.output[0].type.tensor_type
    image.shape.dim[2].dim_param = "H"
    heatmaps.shape.dim[1].dim_param = "C"
    check, _ = structure(model)
    assert check.ok is True and check.found["inputs"] == {"image": "Nx3xHx256"}


def test_two_inputs_are_not_one_image():
    check, problems = structure(graph(extra_input=True))
    assert check.ok is False and check.found["batch"] == "unknown"
    assert any("expected one input Nx3xHxW" in p and "mask" in p for p in problems)


def test_a_one_channel_input_is_not_an_image():
    check, problems = structure(graph(image=("N", 1, *XS.input_size)))
    assert check.ok is False
    assert any("expected one input Nx3xHxW" in p and "Nx1x256x256" in p for p in problems)


def test_another_input_size_is_named():
    check, problems = structure(graph(image=("N", 3, 128, 128), stride=STRIDE // 2))
    assert check.ok is False
    assert len(problems) == 1 and "Nx3x128x128" in problems[0] and "256x256" in problems[0]


def test_a_fixed_batch_is_one_input_size_not_the_model():
    check, problems = structure(graph(image=(1, 3, *XS.input_size)))
    assert check.ok is False and check.found["batch"] == "fixed at 1"
    assert len(problems) == 1 and "fixed at 1" in problems[0]
    assert "dynamic batch" in problems[0]  # what to do about it


def test_an_output_of_neither_role_is_no_heatmaps():
    check, problems = structure(rank_two_output())
    assert check.ok is False and check.found["has"] == "neither"
    assert len(problems) == 1


def test_heatmaps_of_other_channels_are_named_with_the_expected_shape():
    check, problems = structure(graph(channels=XS.joint_num))
    assert check.ok is False
    assert len(problems) == 1 and problems[0].startswith("heatmaps ")
    assert f"Nx{XS.joint_num}x32x32" in problems[0] and f"Nx{CHANNELS}x32x32" in problems[0]


def test_a_graph_the_onnx_checker_rejects_fails_with_its_reason():
    check, problems = structure(graph(op="NoSuchOp"))
    assert check.ok is False and check.found["checker"].startswith("fail: ")
    assert "onnx.checker" in problems[0] and "NoSuchOp" in problems[0]


def test_the_checker_infers_shapes_strictly():
    """A declared output that contradicts what the nodes compute fails (full_check)."""
    model = graph()
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = XS.joint_num
    assert onnx_check._checker(model).startswith("fail: ")


@pytest.mark.parametrize("error, says", [(ValueError("first line\nsecond line"), "first line"),
                                         (ValueError(), "ValueError")], ids=["message", "none"])
def test_the_checkers_refusal_is_its_first_line_or_its_type(error, says, monkeypatch):
    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(onnx.checker, "check_model", refuse)
    assert onnx_check._checker(graph()) == f"fail: {says}"


def test_without_a_variant_only_the_graphs_own_shapes_are_checked():
    check = onnx_check.check_structure(graph(image=("N", 3, 128, 128)), None)
    assert check.ok is True and check.expected["inputs"] == "one: Nx3xHxW"
    assert check.expected["outputs"] == "heatmaps and/or coords"


# ---------------------------------------------------------------- variant


def test_a_graph_of_no_convnextpose_fails_the_variant_saying_why():
    check = onnx_check.check_variant(None, "stage 1 has no blocks", XS, "--variant")
    assert check.ok is False and check.found is None and check.expected["variant"] == "xs"
    assert check.detail.endswith(": stage 1 has no blocks")  # the reason, as layout gave it


def test_an_architecture_of_no_variant_is_found_but_not_judged_without_one():
    check = onnx_check.check_variant(onnx_graph.layout(tiny()), "", None, "nothing")
    assert check.ok is None and check.expected is None
    assert check.found["variant"] is None and check.found["dims"] == TINY["dims"]
    assert "nothing" in check.detail and "--variant" in check.detail


def test_each_stored_difference_from_the_expected_variant_is_named():
    check = onnx_check.check_variant(onnx_graph.layout(tiny()), "", XS, "the file name")
    assert check.ok is False and "the file name" in check.detail
    assert f"dims expected {list(XS.backbone.dims)} found {list(TINY['dims'])}" in check.detail


def test_a_graph_of_the_variants_convolutions_is_that_variant():
    xs = conv_specs(dims=XS.backbone.dims, depths=XS.backbone.depths, kernel=XS.backbone.kernel,
                    head=tuple(h.out_channels for h in XS.head), head_kernel=XS.head[0].kernel,
                    final=CHANNELS)
    where = onnx_graph.layout(conv_graph(xs), joint_num=XS.joint_num)
    check = onnx_check.check_variant(where, "", XS, "--variant")
    assert check.ok is True and check.found == check.expected
    assert check.expected["variant"] == "xs" and check.expected["dims"] == list(XS.backbone.dims)
    assert "match" in check.detail and "expected [" not in check.detail


def test_dims_of_no_shape_are_unknown():
    assert onnx_check._dims_text(None) == "unknown"
    assert onnx_check._dims_text(["N", None, 3]) == "Nx?x3"


# ---------------------------------------------------------------- upsampling


def resizes(count: int, mode: str = "linear"):
    """image → `count` Resize nodes in a row, each ×2 (linear, align_corners)."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])
    scales = numpy_helper.from_array(numpy.array([1, 1, 2, 2], numpy.float32), "scales")
    nodes, value = [], "image"
    for n in range(count):
        nodes.append(helper.make_node("Resize", [value, "", "scales"], [f"up{n}"], name=f"up{n}",
                                      mode=mode, coordinate_transformation_mode="align_corners"))
        value = f"up{n}"
    out = helper.make_tensor_value_info(value, TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", [image], [out], [scales]),
                             opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_too_few_upsampling_nodes_are_counted():
    check = onnx_check.check_upsampling(resizes(1), None, XS)
    assert check.ok is False
    first = check.detail.split("; ")[0]
    assert first.startswith("1 ") and "expected 2" in first and "XS" in first


def test_an_upsampling_node_more_than_the_spec_is_unexpected():
    check = onnx_check.check_upsampling(resizes(3), None, XS)
    assert check.ok is False
    last = check.detail.split("; ")[-1]
    assert last.startswith("up2 ") and last.endswith("unexpected")


def test_each_upsampling_node_names_what_differs():
    check = onnx_check.check_upsampling(resizes(2, mode="nearest"), None, XS)
    assert check.ok is False
    up0, up1 = check.detail.split("; up1")
    assert up0.startswith("up0 ") and "mode nearest" in up0 and "head.deconv_layers_1" in up0
    assert "mode nearest" in up1 and "head.deconv_layers_2" in up1


def test_upsampling_without_a_variant_is_not_checked():
    check = onnx_check.check_upsampling(resizes(1), None, None)
    assert check.ok is None and check.expected is None and len(check.found) == 1
    assert "--variant" in check.detail  # what to do about it


def upsampling_as_xs():
    """XS upsamples in head layers 1 and 2 (2UP): a Resize in each, linear, align_corners, ×2."""
    where = onnx_graph.layout(tiny())
    return with_resizes(tiny(), [where.head_starts[0] + 1, where.head_starts[1] + 1],
                        mode="linear", coordinate_transformation_mode="align_corners")


def test_upsampling_as_the_spec_says_passes_and_names_each_layer():
    model = upsampling_as_xs()
    check = onnx_check.check_upsampling(model, onnx_graph.layout(model), XS)
    layers = [onnx_graph.head_layer_name(n) for n, factor in enumerate(XS.head_upsample, 1)
              if factor == 2]
    assert check.ok is True and [e["layer"] for e in check.expected] == layers
    assert all(e["mode"] == "linear" and e["scale"] == [2.0, 2.0] for e in check.expected)
    assert [part.split()[0] for part in check.detail.split("; ")] == layers
    assert all(part.endswith(" linear align_corners x2") for part in check.detail.split("; "))


def test_the_report_places_the_upsampling_nodes_of_the_expected_variant(tmp_path):
    onnx.save(upsampling_as_xs(), tmp_path / "xs_model.onnx")
    check = onnx_check.report(tmp_path / "xs_model.onnx").checks[2]
    assert check.ok is True
    assert [f["layer"] for f in check.found] == ["head.deconv_layers_1", "head.deconv_layers_2"]


@pytest.mark.parametrize("scale, text", [([2.0, 2.0], "2"), ([2.0, 1.5], "2,1.5"), (None, "?")],
                         ids=["square", "two-factors", "unknown"])
def test_a_scale_is_written_once_when_both_sides_agree(scale, text):
    assert onnx_check._scale_text(scale) == text


# ---------------------------------------------------------------- numerics


@pytest.fixture(scope="module")
def reference():
    return Reference(seeded_model("xs"), "seeded XS")


def test_tolerance_units_are_the_deviation_over_the_allowed_one():
    expected = numpy.array([0.0, 1.0, -2.0])
    found = expected + numpy.array([ATOL, -(ATOL + RTOL), 0.5 * (ATOL + 2 * RTOL)])
    assert onnx_check.tolerance_units(found, expected) == pytest.approx(1.0)
    assert onnx_check.tolerance_units(found[2:], expected[2:]) == pytest.approx(0.5)
    assert onnx_check.tolerance_units(numpy.zeros(0), numpy.zeros(0)) == 0.0
    assert math.isnan(onnx_check.tolerance_units(numpy.array([math.nan]), numpy.zeros(1)))


def test_a_graph_onnx_runtime_cannot_load_fails_the_numerics(reference):
    check = onnx_check.check_numerics(graph(op="NoSuchOp"), reference)
    assert check.ok is False and check.found is None
    assert "ONNX Runtime" in check.detail and "NoSuchOp" in check.detail


def test_a_batch_onnx_runtime_cannot_run_is_named(reference):
    check = onnx_check.check_numerics(graph(image=(1, 3, *XS.input_size)), reference)
    assert check.ok is False and list(check.found) == ["batch_1"]
    assert any(p.startswith("batch 4: ") for p in check.detail.split("; "))


def test_a_batch_that_fails_does_not_stop_the_next(reference):
    check = onnx_check.check_numerics(graph(image=(4, 3, *XS.input_size)), reference)
    assert list(check.found) == ["batch_4"]  # batch 1 failed first, batch 4 still ran
    assert any(p.startswith("batch 1: ") for p in check.detail.split("; "))


def test_a_failed_run_quotes_onnx_runtimes_reason(reference):
    import onnxruntime

    model = graph(image=(1, 3, *XS.input_size))
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    with pytest.raises(Exception) as refused:  # noqa: PT011 - whatever ONNX Runtime raises
        session.run(None, {"image": numpy.zeros((4, 3, *XS.input_size), numpy.float32)})
    reason = str(refused.value).splitlines()[0]
    assert reason in onnx_check.check_numerics(model, reference).detail


@pytest.mark.parametrize("case", ["no-reference", "unloadable", "run"])
def test_the_numerics_check_states_its_tolerance_source_and_basis(case, reference):
    model = graph(op="NoSuchOp") if case == "unloadable" else graph()
    given = Reference(None, "nothing to compare with") if case == "no-reference" else reference
    check = onnx_check.check_numerics(model, given)
    assert check.check == "numerics" and (check.source, check.basis) == ("golden", "measured")
    assert all(str(v) in check.expected for v in (RTOL, ATOL, *onnx_check.BATCHES))
    if case == "no-reference":
        assert check.ok is None and check.detail == "nothing to compare with"


def test_an_output_of_another_shape_is_named_not_compared(reference):
    check = onnx_check.check_numerics(graph(channels=XS.joint_num), reference)
    assert check.ok is False
    assert check.found == {"batch_1": {"heatmaps": None}, "batch_4": {"heatmaps": None}}
    assert f"batch 1: heatmaps [1, {XS.joint_num}, 32, 32], expected [1, {CHANNELS}, 32, 32]" \
        in check.detail.split("; ")


def test_outputs_far_off_name_the_worst_role_and_batch(reference):
    check = onnx_check.check_numerics(graph(), reference)
    ratios = {batch: r["heatmaps"] for batch, r in check.found.items()}
    worst = max(ratios, key=ratios.get)
    assert check.ok is False and min(ratios.values()) > 1
    headline, *problems = check.detail.split("; ")
    assert f"{ratios[worst]:.3g}" in headline and worst.replace("_", " ") in headline
    assert "heatmaps" in headline and "seeded XS" in headline
    assert [p.split(":")[0] for p in problems] == ["batch 1", "batch 4"]
    assert f"{ratios['batch_1']:.3g}" in problems[0] and f"{ratios['batch_4']:.3g}" in problems[1]


def test_each_role_is_compared_on_its_own_output(reference):
    """Heatmaps of another shape do not stop the coordinates' comparison, and an output of
    neither role, listed first, is not taken for one."""
    model = with_coords(graph(channels=XS.joint_num))
    model.graph.node.append(
        helper.make_node("ReduceMean", ["image"], ["features"], axes=[2, 3], keepdims=0))
    model.graph.output.insert(
        0, helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3]))
    check = onnx_check.check_numerics(model, reference)
    assert check.ok is False
    assert [sorted(ratios) for ratios in check.found.values()] == [["coords", "heatmaps"]] * 2
    for ratios in check.found.values():
        assert ratios["heatmaps"] is None and ratios["coords"] > 1  # its numbers are not XS's
    problems = check.detail.split("; ")[1:]
    assert [p.split(": ")[1].split()[0] for p in problems] == ["heatmaps", "coords"] * 2


def test_nan_outputs_fail_and_are_recorded_as_no_ratio(reference):
    check = onnx_check.check_numerics(graph(weight=math.nan), reference)
    assert check.ok is False
    assert check.found == {"batch_1": {"heatmaps": None}, "batch_4": {"heatmaps": None}}
    assert "batch 1: heatmaps" in check.detail and "nan" in check.detail


def test_a_graph_without_heatmaps_or_coords_has_nothing_to_compare(reference):
    check = onnx_check.check_numerics(rank_two_output(), reference)
    assert check.ok is False and check.found == {"batch_1": {}, "batch_4": {}}
    assert "seeded XS" in check.detail  # the weights compared with


# ---------------------------------------------------------------- what to compare with

SEEDED = {"cnp.weights": "seeded:2023", "cnp.variant": "xs"}


def test_seeded_weights_are_remade_when_the_file_records_their_digest():
    from cnp.export import weights_sha256

    digest = weights_sha256(seeded_model("xs", 2023))
    found = onnx_check._reference({**SEEDED, "cnp.weights_sha256": digest}, None)
    assert weights_sha256(found.model) == digest and not found.from_weights
    assert "XS" in found.source and "seed 2023" in found.source and "metadata" in found.source


@pytest.mark.parametrize("meta, says", [
    ({**SEEDED, "cnp.weights_sha256": "0" * 64}, "another sha256 than this cnp makes"),
    (SEEDED, "no sha256")], ids=["other-digest", "no-digest"])
def test_seeded_weights_of_another_or_no_digest_are_not_compared(meta, says):
    found = onnx_check._reference(meta, None)
    assert found.model is None
    assert says in found.source and "seed 2023" in found.source and "--weights" in found.source
    if "cnp.weights_sha256" not in meta:
        assert "another sha256" not in found.source  # nothing recorded to differ


@pytest.mark.parametrize("meta, says", [
    ({"cnp.weights": "checkpoint:xs.pth"}, "(the file records weights from xs.pth)"),
    ({"cnp.weights": "checkpoint:C:/w/xs.pth"}, "(the file records weights from C:/w/xs.pth)"),
    ({"cnp.weights": "xs.pth"}, "(the file records weights from xs.pth)"),  # no kind: a name
    ({"cnp.weights": "seeded:two", "cnp.variant": "xs"}, "(the file records weights from two)"),
    ({"cnp.weights": "seeded:1", "cnp.variant": "xxl"}, "(the file records weights from 1)"),
    ({}, "no weights to compare with: pass --weights CHECKPOINT")],
    ids=["checkpoint", "checkpoint-path-with-colon", "no-kind", "seed-not-a-number",
         "unknown-variant", "nothing"])
def test_without_weights_to_remake_the_numerics_say_what_the_file_records(meta, says):
    found = onnx_check._reference(meta, None)
    assert found.model is None and says in found.source


@pytest.mark.parametrize("recorded, says", [("same", "records these weights"),
                                             ("other", "records other weights"), (None, None)],
                         ids=["same", "other", "none-recorded"])
def test_weights_given_are_compared_with_the_digest_the_file_records(recorded, says, tmp_path):
    import torch

    from cnp.export import weights_sha256

    model = seeded_model("xs")
    torch.save(model.state_dict(), tmp_path / "xs.pth")
    digest = {"same": weights_sha256(model), "other": "0" * 64}.get(recorded)
    meta = {} if digest is None else {"cnp.weights_sha256": digest}
    found = onnx_check._reference(meta, tmp_path / "xs.pth")
    assert found.from_weights and weights_sha256(found.model) == weights_sha256(model)
    assert str(tmp_path / "xs.pth") in found.source
    assert ("records" not in found.source) if says is None else (says in found.source)


@pytest.mark.parametrize("variant, meta, name, expected", [
    ("s", SEEDED, "m_model.onnx", ("s", "--variant")),
    (None, SEEDED, "m_model.onnx", ("xs", "the file's metadata")),
    (None, {"cnp.variant": "xxl"}, "m_model.onnx", ("m", "the file name")),
    (None, {}, "model.onnx", (None, "nothing"))],
    ids=["argument", "metadata", "file-name", "nothing"])
def test_the_expected_variant_comes_from_the_first_source_that_names_one(variant, meta, name,
                                                                        expected):
    nobody = Reference(None, "none")
    spec, source = onnx_check._expected_variant(Path(name), variant, nobody, meta)
    assert (spec.name if spec else None, source.split(" (")[0]) == expected


def test_weights_name_the_expected_variant_before_the_metadata():
    weights = Reference(seeded_model("s"), "--weights s.pth", from_weights=True)
    spec, source = onnx_check._expected_variant(Path("xs.onnx"), None, weights, SEEDED)
    assert (spec, source) == (VARIANTS["s"], "the --weights checkpoint")


def test_onnx_cases_refuse_a_path_that_does_not_exist(tmp_path):
    with pytest.raises(InputError) as refused:
        onnx_check.onnx_cases(tmp_path / "missing")
    assert refused.value.path == str(tmp_path / "missing") and "no such" in refused.value.problem


def test_check_onnx_gives_the_plugin_every_check_of_the_report(tmp_path):
    onnx.save(graph(), tmp_path / "xs_model.onnx")
    checks = onnx_check.check_onnx(tmp_path / "xs_model.onnx")
    assert checks == list(onnx_check.report(tmp_path / "xs_model.onnx").checks)
    assert [c.check for c in checks] == list(onnx_check.CHECKS)
    assert checks[0].ok is True and checks[3].ok is None  # no weights: numerics not checked


def xs_weights(path):
    import torch

    torch.save(seeded_model("xs").state_dict(), path)
    return path


def test_check_onnx_passes_the_variant_and_the_weights_on(tmp_path):
    onnx.save(graph(), tmp_path / "model.onnx")
    checks = onnx_check.check_onnx(tmp_path / "model.onnx", "s", xs_weights(tmp_path / "w.pth"))
    assert checks[1].expected["variant"] == "s"  # the variant asked for
    assert checks[3].ok is False  # the weights' outputs compared: the graph's are not XS's


def test_the_variant_asked_for_wins_over_the_files_name(tmp_path):
    onnx.save(tiny(), tmp_path / "xs_model.onnx")
    variant = onnx_check.report(tmp_path / "xs_model.onnx", variant="s").checks[1]
    assert variant.expected["variant"] == "s" and variant.ok is False


def test_weights_given_are_compared_with_the_graphs_outputs(tmp_path):
    onnx.save(graph(), tmp_path / "model.onnx")
    numerics = onnx_check.report(tmp_path / "model.onnx", variant="xs",
                                 weights=xs_weights(tmp_path / "w.pth")).checks[3]
    assert numerics.ok is False and numerics.found  # run and compared, not skipped


def test_onnx_cases_of_one_file_are_that_file_whatever_its_suffix(tmp_path):
    (tmp_path / "s_model.bin").write_bytes(b"")
    assert onnx_check.onnx_cases(tmp_path / "s_model.bin") == [
        ("s-s_model.bin", tmp_path / "s_model.bin")]


def test_onnx_cases_of_a_folder_are_its_onnx_files_in_name_order(tmp_path):
    for name in ("xs_b.onnx", "a.onnx", "notes.txt", "upper.ONNX"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.onnx").mkdir()  # a folder is no export, whatever its name
    assert onnx_check.onnx_cases(tmp_path) == [
        ("unlabeled-a.onnx", tmp_path / "a.onnx"), ("xs-xs_b.onnx", tmp_path / "xs_b.onnx")]


# Where each check's expectation comes from, and how its finding was obtained.
SOURCES = {"structure": ("spec", "stored"), "variant": ("spec", "stored"),
           "upsampling": ("spec", "measured"), "numerics": ("golden", "measured")}


@pytest.mark.parametrize("name", ["xs_model.onnx", "model.onnx"], ids=["xs", "no-variant"])
@pytest.mark.parametrize("kind", ["no-convnextpose", "tiny-convnextpose"])
def test_each_check_names_its_source_and_basis(kind, name, tmp_path):
    onnx.save(graph() if kind == "no-convnextpose" else tiny(), tmp_path / name)
    checks = onnx_check.report(tmp_path / name).checks
    assert {c.check: (c.source, c.basis) for c in checks} == SOURCES


def test_the_json_report_has_the_documented_fields(tmp_path):
    """`cnp check-onnx --json`: {path, variant, checks: [{check, ok, expected, found, detail}]}."""
    onnx.save(graph(), tmp_path / "xs_model.onnx")
    data = onnx_check.report(tmp_path / "xs_model.onnx").to_dict()
    assert data["path"] == str(tmp_path / "xs_model.onnx") and data["variant"] == "xs"
    assert [sorted(c) for c in data["checks"]] == [
        ["check", "detail", "expected", "found", "ok"]] * len(onnx_check.CHECKS)


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_the_report_names_a_missing_module_before_reading_the_file(missing, tmp_path,
                                                                  uninstalled):
    uninstalled(missing)
    with pytest.raises(InputError) as refused:
        onnx_check.report(tmp_path / "missing.onnx")
    assert refused.value.path == missing


def test_the_report_checks_against_the_expected_variant(tmp_path):
    """The variant named by the file: structure expects its input size; the final layer is
    split by its joint count, not by the graph's declared coordinates (here 5 joints)."""
    outputs = (("heatmaps", ["N", TINY["final"], 8, 8]), ("coords", ["N", 5, 3]))
    onnx.save(tiny(outputs), tmp_path / "xs_model.onnx")
    checks = {c.check: c for c in onnx_check.report(tmp_path / "xs_model.onnx").checks}
    assert "256x256" in checks["structure"].expected["inputs"]
    assert checks["variant"].found["final_out"] == TINY["final"]
    assert "the file name" in checks["variant"].detail  # where the expectation came from


def test_the_report_says_why_a_graph_is_no_convnextpose(tmp_path):
    onnx.save(graph(), tmp_path / "xs_model.onnx")
    variant = onnx_check.report(tmp_path / "xs_model.onnx").checks[1]
    assert variant.ok is False and f"[{CHANNELS}, 3, {STRIDE}, {STRIDE}]" in variant.detail


def test_an_unknown_variant_is_refused_before_the_file_is_read(tmp_path):
    from cnp.specs import UnknownVariantError

    with pytest.raises(UnknownVariantError, match="'xxl'"):
        onnx_check.report(tmp_path / "missing.onnx", variant="xxl")
