"""The fast path's rewritten graph, run by ONNX Runtime (the `onnx` extra).

cnp.fast rewrites the model (BatchNorms folded, the last 1×1 conv in front of the last
upsampling). This module writes that rewritten graph as ONNX, node by node from the folded
weights (no exporter: milliseconds, and the graph is exactly the one described here), and
runs it in an ONNX Runtime session. Why ONNX Runtime runs it rather than torch: on a CPU
shared with other processes, torch's OpenMP threads split every operator into fixed
halves, so one descheduled thread stalls the other at each of the ~100 operators; ONNX
Runtime's thread pool hands out work in shards that whichever thread is running takes.
On this 2-core machine under load (2026-11-22) the same graph took 4-14× as long in torch,
1.4-1.9× with OMP_WAIT_POLICY=PASSIVE (docs/performance.md).

Soft-argmax is part of the graph, in a form with few passes over the volume and no
reductions over strided axes: a row-wise Softmax over each joint's D·h·w voxels, a MatMul
of every image line (w voxels) with the (w × 2) matrix [1, x] (each line's mass and
x-weighted mass), and a MatMul of those 2·D·h numbers per joint with a constant matrix of
each line's x, y and z weights. In a graph of one 1×1 conv and the soft-argmax at XS's
sizes it added 0.28 ms, against 0.95 ms for one MatMul with a (D·h·w × 3) matrix of voxel
indices and 0.74 ms for ReduceSums over the marginals (2026-11-22, shared 2-core VM).
The expectations are divided by the mass those MatMuls summed (a fourth column), not by
Softmax's own sum: the rounding of the normalization then cancels. For L with cnp's golden
weights (heatmap std 3-6), coordinates relying on Softmax's sum were 2.4e-3 heatmap units
from the float64 evaluation, as far as eager float32's own; divided by the mass, 3e-5.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnp.export import COORDS, HEATMAPS, INPUT, inference_session, require
from cnp.fast import FastConvNeXtPose, conv_bias

OPSET = 17
IR_VERSION = 8  # what opset 17 needs; every onnxruntime since 1.10 reads it


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).contiguous().numpy()


class _Graph:
    """Nodes and initializers of an ONNX graph under construction."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def conv(self, name: str, x: str, conv: nn.Conv2d) -> str:
        weight = self.constant(f"{name}.weight", _array(conv.weight))
        bias = self.constant(f"{name}.bias", _array(conv_bias(conv)))
        pad_h, pad_w = conv.padding
        return self.node("Conv", [x, weight, bias], name, kernel_shape=list(conv.kernel_size),
                         strides=list(conv.stride), pads=[pad_h, pad_w, pad_h, pad_w],
                         group=conv.groups)

    def upsample(self, name: str, x: str) -> str:
        # nn.UpsamplingBilinear2d(scale_factor=2): bilinear, align_corners=True.
        scales = self.constant(f"{name}.scales", np.array([1, 1, 2, 2], dtype=np.float32))
        return self.node("Resize", [x, "", scales], name, mode="linear",
                         coordinate_transformation_mode="align_corners")

    def batchnorm(self, name: str, x: str, bn: nn.BatchNorm2d) -> str:
        inputs = [x] + [self.constant(f"{name}.{key}", _array(getattr(bn, key)))
                        for key in ("weight", "bias", "running_mean", "running_var")]
        return self.node("BatchNormalization", inputs, name, epsilon=bn.eps)


def _soft_argmax(graph: _Graph, heatmaps: str, joint_num: int, depth: int, height: int,
                 width: int) -> str:
    """cnp.model.soft_argmax as a row-wise Softmax and two small MatMuls (see the docstring)."""
    def shape(name: str, *sizes: int) -> str:
        return graph.constant(name, np.array(sizes, dtype=np.int64))

    rows = graph.node("Reshape", [heatmaps, shape("rows.shape", -1, depth * height * width)],
                      "rows")  # (N·J, D·h·w): one joint's volume per row
    probabilities = graph.node("Softmax", [rows], "probabilities", axis=-1)
    lines = graph.node("Reshape", [probabilities, shape("lines.shape", -1, width)], "lines")
    # Per image line (n, j, z, y): its mass and its x-weighted mass.
    along_x = np.stack([np.ones(width), np.arange(width)], axis=1).astype(np.float32)
    line_sums = graph.node("MatMul", [lines, graph.constant("along_x", along_x)], "line_sums")
    per_joint = graph.node("Reshape", [line_sums, shape("per_joint.shape", -1, depth * height * 2)],
                           "per_joint")
    # Row (z, y, mass) weighs in y, z and the total; row (z, y, x-weighted mass) is x's
    # numerator.
    z, y = np.meshgrid(np.arange(depth), np.arange(height), indexing="ij")
    weights = np.zeros((depth * height, 2, 4), dtype=np.float32)
    weights[:, 0, 1], weights[:, 0, 2], weights[:, 0, 3] = y.ravel(), z.ravel(), 1
    weights[:, 1, 0] = 1
    moments = graph.node("MatMul", [per_joint, graph.constant(
        "line_weights", weights.reshape(-1, 4))], "moments")  # (N·J, 4): x, y, z, total
    # Divided by the total they were summed with, not by Softmax's own sum: rounding in the
    # normalization then cancels (see the module docstring).
    columns = shape("columns", 1)
    numerators = graph.node("Slice", [moments, shape("x.start", 0), shape("z.end", 3), columns],
                            "numerators")
    total = graph.node("Slice", [moments, shape("total.start", 3), shape("total.end", 4), columns],
                       "total")
    expected = graph.node("Div", [numerators, total], "expected")  # (N·J, 3): x, y, z
    return graph.node("Reshape", [expected, shape("coords.shape", -1, joint_num, 3)], COORDS)


def to_onnx(fast: FastConvNeXtPose):
    """The rewritten graph as an onnx.ModelProto: image → heatmaps, coords."""
    require("onnx")
    from onnx import TensorProto, helper

    spec = fast.spec
    graph = _Graph()
    x = INPUT
    for i, (downsample, stage) in enumerate(zip(fast.downsample_layers, fast.stages)):
        x = graph.conv(f"downsample{i}", x, downsample)
        for j, block in enumerate(stage):
            name = f"stage{i}.{j}"
            hidden = graph.conv(f"{name}.pwconv1", graph.conv(f"{name}.dwconv", x, block.dwconv),
                                block.pwconv1)
            hidden = graph.node("Relu", [hidden], f"{name}.relu")
            x = graph.node("Add", [x, graph.conv(f"{name}.pwconv2", hidden, block.pwconv2)], name)
    x = graph.batchnorm("norm", x, fast.norm)
    for i, layer in enumerate(fast.deconv_layers):
        name = f"head{i}"
        x = graph.conv(f"{name}.pwconv", graph.conv(f"{name}.dwconv", x, layer.dwconv),
                       layer.pwconv)
        x = graph.node("Relu", [x], f"{name}.relu")
        if layer.upsample:
            x = graph.upsample(f"{name}.upsample", x)
    if fast.upsample_last:
        heatmaps = graph.upsample(HEATMAPS, graph.conv("final_layer", x, fast.final_layer))
    else:
        heatmaps = graph.conv(HEATMAPS, x, fast.final_layer)
    h, w = spec.heatmap_size
    _soft_argmax(graph, heatmaps, spec.joint_num, spec.depth_dim, h, w)
    channels = spec.joint_num * spec.depth_dim
    proto = helper.make_graph(
        graph.nodes, f"cnp-fast-{spec.name}",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, *spec.input_size])],
        [helper.make_tensor_value_info(HEATMAPS, TensorProto.FLOAT, ["batch", channels, h, w]),
         helper.make_tensor_value_info(COORDS, TensorProto.FLOAT, ["batch", spec.joint_num, 3])],
        graph.initializers)
    # IR version pinned: onnx writes its newest, which an older onnxruntime refuses.
    return helper.make_model(proto, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="cnp.fast_ort", ir_version=IR_VERSION)


class OrtFastModel:
    """FastConvNeXtPose's function run by ONNX Runtime: heatmaps(image), model(image)."""

    engine = "onnxruntime"

    def __init__(self, fast: FastConvNeXtPose):
        # The same session settings as the plain export's ONNX Runtime backend of
        # `cnp bench`: the graph, not the configuration, is what differs.
        self.spec = fast.spec
        self.session = inference_session(to_onnx(fast).SerializeToString())

    def _run(self, output: str, image: torch.Tensor) -> torch.Tensor:
        array = image.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run([output], {INPUT: array})[0])

    def heatmaps(self, image: torch.Tensor) -> torch.Tensor:
        return self._run(HEATMAPS, image)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self._run(COORDS, image)
