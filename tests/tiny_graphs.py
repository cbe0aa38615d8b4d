"""ONNX graphs of convolutions alone, shaped like a ConvNeXtPose far smaller than XS: what
cnp.onnx_graph.layout reads (weight shapes, groups, strides), without a real export. The
graphs need not run: the convolutions are chained but their shapes do not fit."""

from __future__ import annotations

import numpy
from onnx import TensorProto, helper, numpy_helper

from cnp.checkpoints import DEFAULT_JOINTS

TINY = {"dims": (4, 8, 16, 32), "depths": (1, 1, 2, 1), "kernel": 3, "head": (8, 8, 8),
        "head_kernel": 5, "final": 2 * DEFAULT_JOINTS}


def conv_specs(dims, depths, kernel, head, head_kernel, final, kernels=None):
    """(weight shape, group, stride) of each convolution, in forward order."""
    convs, inputs = [], 3
    block_kernels = iter(kernels or [kernel] * sum(depths))
    for stage, (width, depth) in enumerate(zip(dims, depths)):
        patch = 4 if stage == 0 else 2
        convs.append(((width, inputs, patch, patch), 1, patch))
        for _ in range(depth):
            k = next(block_kernels)
            convs += [((width, 1, k, k), width, 1), ((4 * width, width, 1, 1), 1, 1),
                      ((width, 4 * width, 1, 1), 1, 1)]
        inputs = width
    for channels in head:
        convs += [((inputs, 1, head_kernel, head_kernel), inputs, 1),
                  ((channels, inputs, 1, 1), 1, 1)]
        inputs = channels
    return convs + [((final, inputs, 1, 1), 1, 1)]


def conv_graph(convs, outputs=None, stored=True):
    """One Conv node per spec, chained; weights as initializers (or graph inputs: computed).
    `outputs`: (name, shape) pairs; by default heatmaps of the final layer's channels."""
    outputs = outputs or (("heatmaps", ["N", convs[-1][0][0], 8, 8]),)
    nodes, weights, value = [], [], "image"
    for n, (shape, group, stride) in enumerate(convs):
        nodes.append(helper.make_node("Conv", [value, f"w{n}"], [f"c{n}"], group=group,
                                      strides=[stride, stride]))
        weights.append(numpy_helper.from_array(numpy.zeros(shape, numpy.float32), f"w{n}"))
        value = f"c{n}"
    nodes.append(helper.make_node("Identity", [value], [outputs[0][0]]))
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 64, 64])]
    if not stored:
        inputs += [helper.make_tensor_value_info(w.name, TensorProto.FLOAT, list(w.dims))
                   for w in weights]
        weights = []
    declared = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
                for name, shape in outputs]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, declared, weights))


def tiny(outputs=None, **changes):
    return conv_graph(conv_specs(**{**TINY, **changes}), outputs)


def with_resizes(model, before, **attributes):
    """`model` with a Resize node (×2 by the constant `scales`) inserted before each node
    index in `before`, named up<index>; `attributes`: mode, coordinate_transformation_mode."""
    nodes = list(model.graph.node)
    for i in sorted(before, reverse=True):
        nodes.insert(i, helper.make_node("Resize", [f"c{i - 1}", "", "scales"], [f"up{i}"],
                                         name=f"up{i}", **attributes))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.append(
        numpy_helper.from_array(numpy.array([1, 1, 2, 2], numpy.float32), "scales"))
    return model
