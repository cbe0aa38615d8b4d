"""cnp.onnx_graph on hand-made graphs: the architecture read off convolution weights alone,
each way a graph departs from a ConvNeXtPose, outputs by role, scales, unusable files.
(tests/test_onnx.py reads real exports.)"""

from __future__ import annotations

import importlib.util

import numpy
import pytest

if importlib.util.find_spec("onnx") is None:
    pytest.skip("the 'onnx' extra is not installed", allow_module_level=True)

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cnp import onnx_graph  # noqa: E402
from cnp.checkpoints import DEFAULT_JOINTS  # noqa: E402
from cnp.errors import InputError  # noqa: E402

from tiny_graphs import TINY, conv_graph, conv_specs, tiny, with_resizes  # noqa: E402


# ---------------------------------------------------------------- architecture


def test_layout_reads_the_architecture_off_the_weights():
    where = onnx_graph.layout(tiny())
    inferred = where.inferred
    assert (inferred.dims, inferred.depths, inferred.kernel) == (
        TINY["dims"], TINY["depths"], TINY["kernel"])
    assert (inferred.head_channels, inferred.head_kernels, inferred.final_out) == (
        TINY["head"], (TINY["head_kernel"],) * 3, TINY["final"])
    assert (inferred.joint_num, inferred.depth_dim) == (DEFAULT_JOINTS, 2)
    assert isinstance(inferred.depth_dim, int)  # a count, as in a spec
    backbone = 4 + 3 * sum(TINY["depths"])  # stem and downsamplings, three per block
    assert where.head_starts == (backbone, backbone + 2, backbone + 4)
    assert where.final_index == backbone + 6


def test_the_joint_count_given_splits_the_final_layer():
    inferred = onnx_graph.layout(tiny(), joint_num=12).inferred
    assert (inferred.joint_num, inferred.depth_dim) == (12, 3)


def test_each_head_layer_has_its_own_width():
    inferred = onnx_graph.layout(tiny(head=(8, 12, 16))).inferred
    assert (inferred.head_channels, inferred.final_out) == ((8, 12, 16), TINY["final"])


@pytest.mark.parametrize("coords, joints", [
    (("xyz", ["N", 12, 3]), 12),  # a coordinates output by its shape
    (("coords", ["N", 12, None]), 12),  # by its name, the last size unknown
    (("coords", ["N", 1, 3]), 1),
], ids=["by-shape", "by-name", "one-joint"])
def test_the_joint_count_comes_from_a_declared_coordinates_output(coords, joints):
    outputs = (("heatmaps", ["N", 36, 8, 8]), coords)
    assert onnx_graph.layout(tiny(outputs)).inferred.joint_num == joints


DEPARTURES = {  # the facts each message must carry
    "computed": ["run time"],
    "no-stem": ["stem", "convolution 1 of 26", "[4, 3, 2, 2]"],
    "empty-stage": ["stage 1", "no blocks"],
    "two-kernels": ["[3, 7]"],
    "no-final": ["final", "only 25 convolutions"],
    "after-final": ["1 convolutions", "after the final"],
    "joints": ["37 outputs", f"{DEFAULT_JOINTS} joints"],
    # stage 0's one block (width 4), each of its convolutions off in one way:
    "expansion-not-4": ["stage 0", "no blocks"],  # 4 → 12 channels, then 16 → 4
    "block-not-back": ["stage 0", "no blocks"],  # 4 → 16 → 8
    "depthwise-of-other-width": ["stage 0", "no blocks"],  # 8 channels in a 4-wide stage
    "non-square-kernel": ["stage 0", "no blocks"],  # a 3x5 depthwise kernel
    # the head (3 layers of 8 channels after stage 3's 32): one convolution off in each
    "head-1-not-1x1": ["head layer 1's 1x1", "[8, 32, 3, 3]"],
    "head-2-not-depthwise": ["head layer 2's depthwise", "[8, 8, 1, 1]"],
    "head-3-depthwise-of-other-width": ["head layer 3's depthwise", "[16, 1, 5, 5]"],
    "head-3-non-square-kernel": ["head layer 3's depthwise", "[8, 1, 3, 5]"],
}

# case → {index of a convolution (negative: from the end): what replaces it}
ONE_CONV_OFF = {"expansion-not-4": {2: ((12, 4, 1, 1), 1, 1)},
                "block-not-back": {3: ((8, 16, 1, 1), 1, 1)},
                "depthwise-of-other-width": {1: ((8, 1, 3, 3), 8, 1)},
                "non-square-kernel": {1: ((4, 1, 3, 5), 4, 1)},
                "head-1-not-1x1": {-6: ((8, 32, 3, 3), 1, 1)},
                "head-2-not-depthwise": {-5: ((8, 8, 1, 1), 1, 1)},
                "head-3-depthwise-of-other-width": {-3: ((16, 1, 5, 5), 16, 1)},
                "head-3-non-square-kernel": {-3: ((8, 1, 3, 5), 8, 1)}}


def with_one_conv_off(convs, change):
    changed = {index % len(convs): conv for index, conv in change.items()}
    return [changed.get(index, conv) for index, conv in enumerate(convs)]


@pytest.mark.parametrize("case", DEPARTURES)
def test_a_graph_that_is_no_convnextpose_says_where_it_departs(case):
    convs = conv_specs(**TINY)
    model = {
        "computed": lambda: conv_graph(convs, stored=False),
        "no-stem": lambda: conv_graph([((4, 3, 2, 2), 1, 2), *convs[1:]]),
        "empty-stage": lambda: tiny(depths=(1, 0, 2, 1)),
        "two-kernels": lambda: tiny(kernels=[3, 3, 7, 3, 3]),
        "no-final": lambda: conv_graph(convs[:-1]),
        "after-final": lambda: conv_graph([*convs, convs[-1]]),
        "joints": lambda: tiny(final=37),
    }.get(case, lambda: conv_graph(with_one_conv_off(convs, ONE_CONV_OFF[case])))()
    with pytest.raises(onnx_graph.NotConvNeXtPose) as departs:
        onnx_graph.layout(model)
    assert all(fact in str(departs.value) for fact in DEPARTURES[case])


def conv(shape, group=1, stride=1):
    return onnx_graph.Conv(0, shape, group, (stride, stride))


@pytest.mark.parametrize("weight, group, depthwise", [
    ((8, 1, 7, 7), 8, True),
    ((2, 1, 7, 7), 2, True),
    ((1, 1, 7, 7), 1, False),  # one channel, one group: an ordinary convolution
    ((8, 2, 7, 7), 4, False),  # two inputs per group
    ((2, 2, 7, 7), 2, False),  # as many groups as outputs, two inputs each
    ((8, 8, 1, 1), 1, False),
], ids=["8-channels", "2-channels", "1-channel", "grouped", "group-per-output", "pointwise"])
def test_a_depthwise_convolution_has_one_input_per_output(weight, group, depthwise):
    assert conv(weight, group).depthwise() is depthwise
    assert conv(weight, group).depthwise(weight[0]) is depthwise
    assert conv(weight, group).depthwise(weight[0] + 1) is False


@pytest.mark.parametrize("weight, group, inputs, pointwise", [
    ((8, 4, 1, 1), 1, 4, True),
    ((8, 4, 7, 7), 1, 4, False),  # a 7x7 kernel
    ((8, 2, 1, 1), 2, 2, False),  # grouped
    ((8, 4, 1, 1), 1, 8, False),  # other inputs
], ids=["1x1", "7x7", "grouped", "other-inputs"])
def test_a_pointwise_convolution_is_1x1_ungrouped_from_the_inputs_given(weight, group, inputs,
                                                                        pointwise):
    assert conv(weight, group).pointwise(inputs) is pointwise
    assert conv(weight, group).pointwise(inputs, weight[0]) is pointwise
    assert conv(weight, group).pointwise(inputs, weight[0] + 1) is False


@pytest.mark.parametrize("weight, group, stride, patchify", [
    ((8, 3, 4, 4), 1, 4, True),
    ((8, 3, 4, 4), 1, 2, False),  # overlapping patches
    ((8, 3, 2, 2), 1, 4, False),  # gaps between patches
    ((8, 1, 4, 4), 3, 4, False),  # grouped
], ids=["4x4-stride-4", "stride-2", "2x2-stride-4", "grouped"])
def test_a_patchify_convolution_has_a_stride_equal_to_its_kernel(weight, group, stride,
                                                                  patchify):
    assert conv(weight, group, stride).patchify(4) is patchify


def test_a_conv_nodes_group_and_strides_take_the_onnx_defaults():
    weight = numpy_helper.from_array(numpy.zeros((4, 3, 1, 1), numpy.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"])  # no group, no strides: 1 and (1, 1)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [weight]))
    assert onnx_graph.convolutions(model) == [onnx_graph.Conv(0, (4, 3, 1, 1), 1, (1, 1))]


# ---------------------------------------------------------------- values, inputs, outputs


def test_constants_are_initializers_and_constant_nodes_of_every_form():
    nodes = [helper.make_node("Constant", [], ["t"], value=numpy_helper.from_array(
                 numpy.array([1.0, 2.0, 2.0, 4.0], numpy.float32))),
             helper.make_node("Constant", [], ["f"], value_floats=[1.0, 2.0]),
             helper.make_node("Constant", [], ["i"], value_ints=[3, 4]),
             helper.make_node("Constant", [], ["s"], value_string="text"),
             # a fill value, not the output's value (which has the shape `n` gives)
             helper.make_node("ConstantOfShape", ["n"], ["zeros"], value=numpy_helper.from_array(
                 numpy.array([0.0], numpy.float32)))]
    init = numpy_helper.from_array(numpy.ones((2, 2), numpy.float32), "w")
    out = helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])
    model = helper.make_model(helper.make_graph(nodes, "g", [], [out], [init]))
    known = onnx_graph.constants(model)
    assert sorted(known) == ["f", "i", "t", "w"]  # a string is no number to read; n unknown
    assert known["t"].tolist() == [1.0, 2.0, 2.0, 4.0] and known["w"].shape == (2, 2)
    assert known["f"].tolist() == [1.0, 2.0] and known["i"].tolist() == [3, 4]


def test_outputs_get_a_role_by_name_else_by_shape():
    outputs = (("heatmaps", None), ("out", ["N", 36, 8, 8]), ("xyz", ["N", 18, 3]),
               ("uv", ["N", 18, 2]), ("coords", ["N", 5]))
    roles = onnx_graph.output_roles(tiny(outputs))
    assert roles == {"heatmaps": "heatmaps", "out": "heatmaps", "xyz": "coords",
                     "coords": "coords"}


def test_a_value_without_a_shape_has_no_dims():
    assert onnx_graph.dims(helper.make_tensor_value_info("x", TensorProto.FLOAT, None)) is None
    dims = onnx_graph.dims(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, None]))
    assert dims == ["N", 3, None]


def test_graph_inputs_leave_out_weights_listed_as_inputs():
    model = conv_graph(conv_specs(**TINY), stored=False)
    model.graph.initializer.extend(
        [numpy_helper.from_array(numpy.zeros((1,), numpy.float32), "w0")])
    names = [i.name for i in onnx_graph.graph_inputs(model)]
    assert names[0] == "image" and "w0" not in names and "w1" in names


def test_shapes_fall_back_to_the_declared_ones_when_inference_fails(monkeypatch):
    model = tiny()

    def refuse(*args, **kwargs):
        raise onnx.shape_inference.InferenceError("no")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", refuse)
    assert onnx_graph.shapes(model) == {"image": ["N", 3, 64, 64], "heatmaps": ["N", 36, 8, 8]}


# ---------------------------------------------------------------- upsampling


def test_each_upsampling_node_is_placed_in_the_part_it_sits_in():
    model = tiny()
    where = onnx_graph.layout(model)
    # before node i: a Resize at the stem, inside head layers 1 and 3, after the final layer
    places = {1: "backbone", where.head_starts[0] + 1: "head.deconv_layers_1",
              where.head_starts[2] + 1: "head.deconv_layers_3",
              where.final_index + 1: "after final_layer"}
    model = with_resizes(model, places)
    shifted = onnx_graph.layout(model)  # the same convolutions, at new node indices
    found = onnx_graph.upsampling(model, shifted)
    assert [(f["node"], f["layer"]) for f in found] == [
        (f"up{i}", layer) for i, layer in sorted(places.items())]


def one_node(op, opset, inputs, constants=(), size=("h", "w"), domain="", out=None,
             **attributes):
    """x (1, 3, *size) → one `op` node → y (of the declared size `out`, if given);
    `constants`: (name, values) initializers. A symbolic size leaves the node's constants as
    the only source of its scale."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, *size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out and [1, 3, *out])
    weights = [numpy_helper.from_array(numpy.asarray(v), n) for n, v in constants]
    node = helper.make_node(op, ["x", *inputs], ["y"], **attributes)
    return helper.make_model(helper.make_graph([node], "g", [x], [y], weights),
                             opset_imports=[helper.make_opsetid(domain, opset)])


SCALES = numpy.array([1, 1, 2, 3], numpy.float32)
UPSAMPLING = {
    "resize-opset-13": (one_node("Resize", 13, ["", "s"], [("s", SCALES)], mode="linear"),
                        ("linear", "half_pixel", [2.0, 3.0])),
    "resize-opset-13-as-ai.onnx": (one_node("Resize", 13, ["", "s"], [("s", SCALES)],
                                            domain="ai.onnx"),  # the default domain's other name
                                   ("nearest", "half_pixel", [2.0, 3.0])),
    "resize-opset-11": (one_node("Resize", 11, ["", "s"], [("s", SCALES)]),
                        ("nearest", "half_pixel", [2.0, 3.0])),  # the first with half_pixel
    "resize-opset-10": (one_node("Resize", 10, ["s"], [("s", SCALES)]),
                        ("nearest", "asymmetric", [2.0, 3.0])),
    "upsample-opset-7": (one_node("Upsample", 7, [], scales=[1.0, 1.0, 2.0, 3.0]),
                         ("nearest", "asymmetric", [2.0, 3.0])),
    "upsample-opset-9": (one_node("Upsample", 9, ["s"], [("s", SCALES)], mode="linear"),
                         ("linear", "asymmetric", [2.0, 3.0])),
    "resize-to-sizes": (one_node("Resize", 13, ["", "", "n"],
                                 [("n", numpy.array([1, 3, 16, 24], numpy.int64))], size=(8, 8)),
                        ("nearest", "half_pixel", [2.0, 3.0])),
    "resize-unknown": (one_node("Resize", 13, ["", "", "n"]),
                       ("nearest", "half_pixel", None)),
}


@pytest.mark.parametrize("case", UPSAMPLING)
def test_mode_transformation_and_scale_follow_the_op_and_opset(case):
    model, expected = UPSAMPLING[case]
    if case == "resize-unknown":  # sizes from a graph input: known only at run time
        model.graph.input.append(helper.make_tensor_value_info("n", TensorProto.INT64, [4]))
    (found,) = onnx_graph.upsampling(model, None)
    assert (found["mode"], found["coordinate_transformation_mode"], found["scale"]) == expected
    assert found["op"] == model.graph.node[0].op_type and found["node"] == "y"
    assert "unknown" in found["layer"].lower()  # one node is no ConvNeXtPose: no layer to name


def to_sizes(size, sizes):
    """A Resize of x (1, 3, *size) to the constant (1, 3, *sizes)."""
    return one_node("Resize", 13, ["", "", "n"], [("n", numpy.array([1, 3, *sizes]))], size=size)


def to_sizes_known_at_run_time(out):
    model = one_node("Resize", 13, ["", "", "n"], size=(8, 8), out=out)
    model.graph.input.append(helper.make_tensor_value_info("n", TensorProto.INT64, [4]))
    return model


def to_sizes_computed_from_the_input():
    """sizes = (N, C of x's Shape, 16, 24): what exporters write for a computed size."""
    model = one_node("Resize", 13, ["", "", "n"], size=(8, 8))
    slice_bounds = [numpy_helper.from_array(numpy.array([v]), n) for n, v in (("0", 0), ("2", 2))]
    model.graph.initializer.extend([
        *slice_bounds, numpy_helper.from_array(numpy.array([16, 24]), "hw")])
    model.graph.node.insert(0, helper.make_node("Shape", ["x"], ["shape"]))
    model.graph.node.insert(1, helper.make_node("Slice", ["shape", "0", "2"], ["nc"]))
    model.graph.node.insert(2, helper.make_node("Concat", ["nc", "hw"], ["n"], axis=0))
    return model


@pytest.mark.parametrize("model, scale", [
    (to_sizes((8, 12), (16, 24)), [2.0, 2.0]),
    (to_sizes_computed_from_the_input(), [2.0, 3.0]),
    (to_sizes((1, 8), (2, 24)), [2.0, 3.0]),
    (to_sizes((0, 8), (16, 24)), None),
    (to_sizes(("h", 8), (16, 24)), None),
    (to_sizes_known_at_run_time(("H", 24)), None),
], ids=["per-axis", "sizes-computed", "one-pixel-high", "empty-input", "input-height-unknown",
        "output-height-unknown"])
def test_a_scale_without_constants_is_output_over_input_size(model, scale):
    """Each axis's output size over its input size, where both are known and positive; else
    unknown (None), never a division by zero or by a name."""
    (found,) = onnx_graph.upsampling(model, None)
    assert found["scale"] == scale


# ---------------------------------------------------------------- unusable files


def save_with_external_weights(path):
    """The tiny graph at `path`, its weights in weights.bin beside it; returns that file."""
    onnx.save(tiny(), path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    return path.parent / "weights.bin"


@pytest.mark.parametrize("case, says", [
    ("missing", "no such file"),
    ("directory", "directory"),
    ("empty", "empty"),
    ("zip-archive", "zip archive"),
    ("truncated", "damaged or truncated"),
    ("not-onnx", "not an ONNX model"),
    ("no-nodes", "no graph nodes"),
    ("no-ir-version", "no IR version"),
    ("external-missing", "external weights")])
def test_an_unusable_file_is_named_with_its_problem(case, says, tmp_path):
    path = tmp_path / "model.onnx"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "zip-archive":  # what torch.save writes
        path.write_bytes(b"PK\x03\x04" + bytes(60))
    elif case == "truncated":  # starts as every ONNX file does (ir_version), then stops
        data = tiny().SerializeToString()
        path.write_bytes(data[:len(data) // 2])
    elif case == "not-onnx":
        path.write_text("ir_version: 8\n")
    elif case == "no-nodes":
        model = tiny()
        del model.graph.node[:]
        onnx.save(model, path)
    elif case == "no-ir-version":
        model = tiny()
        model.ir_version = 0
        onnx.save(model, path)
    elif case == "external-missing":
        save_with_external_weights(path).unlink()
    with pytest.raises(InputError) as refused:
        onnx_graph.load(path)
    assert refused.value.path == str(path) and says in refused.value.problem


def onnx_refusal(read) -> str:
    """The first line of what onnx itself raises for `read()`."""
    with pytest.raises(Exception) as refused:  # noqa: PT011 - whichever onnx raises
        read()
    return str(refused.value).splitlines()[0]


def test_a_damaged_file_quotes_the_decoders_reason(tmp_path):
    data = tiny().SerializeToString()[:100]
    (tmp_path / "model.onnx").write_bytes(data)
    reason = onnx_refusal(lambda: onnx.load_model_from_string(data))
    with pytest.raises(InputError) as refused:
        onnx_graph.load(tmp_path / "model.onnx")
    assert reason in refused.value.problem


def test_missing_external_weights_quote_the_onnx_librarys_reason(tmp_path):
    save_with_external_weights(tmp_path / "model.onnx").unlink()
    reason = onnx_refusal(lambda: onnx.load_external_data_for_model(
        onnx.load(tmp_path / "model.onnx", load_external_data=False), str(tmp_path)))
    with pytest.raises(InputError) as refused:
        onnx_graph.load(tmp_path / "model.onnx")
    assert reason in refused.value.problem


def test_the_oldest_ir_version_is_read(tmp_path):
    model = tiny()
    model.ir_version = 1
    onnx.save(model, tmp_path / "model.onnx")
    assert onnx_graph.load(tmp_path / "model.onnx").ir_version == 1


def test_a_file_that_cannot_be_read_is_named_with_the_reason(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    onnx.save(tiny(), path)

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(path), "read_bytes", refuse)
    with pytest.raises(InputError) as refused:
        onnx_graph.load(path)
    assert refused.value.path == str(path) and "Permission denied" in refused.value.problem


def test_external_weights_beside_the_file_are_read(tmp_path):
    save_with_external_weights(tmp_path / "model.onnx")
    model = onnx_graph.load(tmp_path / "model.onnx")
    assert onnx_graph.layout(model).inferred.dims == TINY["dims"]
