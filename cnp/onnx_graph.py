"""Reading a ConvNeXtPose out of an ONNX graph: its architecture from the convolutions'
weight shapes, its upsampling from the Resize/Upsample nodes, its inputs and outputs.

Exporters rename initializers (`model.backbone...`, `onnx::Conv_123`, `val_7`) and fold
BatchNorm into the convolution before it, so nothing here relies on names or on BatchNorm
nodes: the convolutions are read in graph order (ONNX requires a topological order, and
torch's exporters follow the forward pass) and recognized by shape alone.

    stem      4×4 stride 4                 → dims[0]
    block     depthwise k×k, 1×1 C→4C, 1×1 4C→C   (depths[s] of them per stage)
    downsample 2×2 stride 2                → dims[1..3], before stages 1..3
    head      depthwise k×k, 1×1 → channels        (three layers)
    final     1×1 → joint_num·depth_dim

Needs the `onnx` package; imported only by `cnp check-onnx` and the plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy

from cnp.checkpoints import DEFAULT_JOINTS, Inferred
from cnp.errors import InputError

HEATMAPS, COORDS = "heatmaps", "coords"


# ---------------------------------------------------------------- reading the file


def load(path: str | Path):
    """The file's onnx.ModelProto; InputError (exit 2) for anything that is not one."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, not an ONNX file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror}") from None
    if not data:
        raise InputError(path, "empty file")
    if data.startswith(b"PK\x03\x04"):
        raise InputError(path, "is a zip archive (a PyTorch checkpoint?), not an ONNX model; "
                               "`cnp export` writes one from a checkpoint")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError) as error:
        # Every ONNX file starts with field 1 (ir_version, a varint): tag byte 0x08.
        what = ("a damaged or truncated ONNX model" if data[:1] == b"\x08"
                else "not an ONNX model")
        raise InputError(path, f"{what} (protobuf: {str(error).splitlines()[0]})") from None
    if model.ir_version < 1 or not model.graph.node:
        raise InputError(path, "not an ONNX model (no IR version or no graph nodes)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError, onnx.checker.ValidationError) as error:
            # onnx refuses a missing weights file as a ValidationError, not an OSError
            raise InputError(path, f"its external weights cannot be read: "
                                   f"{str(error).splitlines()[0]}") from None
    return model


def opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _attributes(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def constants(model) -> dict[str, numpy.ndarray]:
    """Values known without running the graph: initializers and Constant node outputs."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute:
            attribute = node.attribute[0]
            if attribute.name == "value":
                values[node.output[0]] = numpy_helper.to_array(attribute.t)
            elif attribute.name in ("value_floats", "value_ints"):
                values[node.output[0]] = numpy.array(_attributes(node)[attribute.name])
    return values


def shapes(model) -> dict[str, list]:
    """Each value's shape from ONNX shape inference (with data propagation, so sizes that
    are computed from Shape nodes resolve): ints, a name for a symbolic dimension, None."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - a graph inference rejects still has declared shapes
        inferred = model
    graph = inferred.graph
    return {v.name: dims(v) for v in [*graph.input, *graph.value_info, *graph.output]}


def dims(value_info) -> list | None:
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in tensor.shape.dim]


# ---------------------------------------------------------------- inputs and outputs


def output_roles(model) -> dict[str, str]:
    """Output name → "heatmaps" or "coords": by name, else by shape (rank 4: heatmaps;
    rank 3 ending in 3: coordinates). Outputs that are neither are left out."""
    roles = {}
    for output in model.graph.output:
        shape = dims(output) or []
        if output.name in (HEATMAPS, COORDS):
            roles[output.name] = output.name
        elif len(shape) == 4:
            roles[output.name] = HEATMAPS
        elif len(shape) == 3 and shape[-1] == 3:
            roles[output.name] = COORDS
    return roles


def graph_inputs(model) -> list:
    """The real inputs (old exporters also list the initializers as inputs)."""
    weights = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in weights]


# ---------------------------------------------------------------- architecture


@dataclass(frozen=True)
class Conv:
    index: int  # position of the node in graph.node
    shape: tuple[int, ...] | None  # weight (out, in/group, kh, kw); None: computed at run time
    group: int
    stride: tuple[int, ...]

    @property
    def out(self) -> int:
        return self.shape[0]

    def patchify(self, kernel: int) -> bool:
        return (self.group == 1 and self.shape[2:] == (kernel, kernel)
                and self.stride == (kernel, kernel))

    def depthwise(self, channels: int | None = None) -> bool:
        return (self.group > 1 and self.shape[1] == 1 and self.group == self.out
                and (channels is None or self.out == channels))

    def pointwise(self, inputs: int, outputs: int | None = None) -> bool:
        return (self.group == 1 and self.shape[2:] == (1, 1) and self.shape[1] == inputs
                and (outputs is None or self.out == outputs))


def convolutions(model) -> list[Conv]:
    known = constants(model)
    found = []
    for index, node in enumerate(model.graph.node):
        if node.op_type != "Conv":
            continue
        weight = known.get(node.input[1])
        attributes = _attributes(node)
        found.append(Conv(index, tuple(weight.shape) if weight is not None else None,
                          int(attributes.get("group", 1)),
                          tuple(attributes.get("strides", (1, 1)))))
    return found


@dataclass(frozen=True)
class Layout:
    """Where the parts of a ConvNeXtPose sit in graph.node, and the architecture they imply."""

    inferred: Inferred
    head_starts: tuple[int, ...]  # node index of each head layer's depthwise convolution
    final_index: int  # node index of the final layer


class NotConvNeXtPose(Exception):
    """The graph's convolutions do not form a ConvNeXtPose; str() says where they depart."""


def layout(model, joint_num: int | None = None) -> Layout:
    """The architecture from the convolutions alone (NotConvNeXtPose if they form none).

    `joint_num` splits the final layer's outputs; default: the coordinates output's joint
    count when the graph declares it, else 18.
    """
    convs = convolutions(model)
    if any(c.shape is None for c in convs):
        raise NotConvNeXtPose("some convolution weights are computed at run time, not stored")
    position = 0

    def take(test, what: str) -> Conv:
        nonlocal position
        if position >= len(convs) or not test(convs[position]):
            at = (f"convolution {position + 1} of {len(convs)} has weight "
                  f"{list(convs[position].shape)}" if position < len(convs)
                  else f"only {len(convs)} convolutions")
            raise NotConvNeXtPose(f"expected {what}: {at}")
        position += 1
        return convs[position - 1]

    def is_block(c: int) -> bool:
        a = convs[position:position + 3]
        return (len(a) == 3 and a[0].depthwise(c) and a[1].pointwise(c, 4 * c)
                and a[2].pointwise(4 * c, c) and a[0].shape[2] == a[0].shape[3])

    dims, depths, kernels = [], [], set()
    for stage in range(4):
        inputs = dims[-1] if dims else 3
        kernel, what = (4, "the 4x4 stride-4 stem") if stage == 0 else (2, f"downsampling {stage}")
        dims.append(take(lambda c: c.patchify(kernel) and c.shape[1] == inputs, what).out)
        depth = 0
        while is_block(dims[-1]):
            kernels.add(convs[position].shape[2])
            position += 3
            depth += 1
        if depth == 0:
            raise NotConvNeXtPose(f"stage {stage} has no blocks")
        depths.append(depth)
    if len(kernels) != 1:
        raise NotConvNeXtPose(f"blocks with different depthwise kernels {sorted(kernels)}")
    channels, head_kernels, starts = [], [], []
    for _ in range(3):
        inputs = channels[-1] if channels else dims[-1]
        layer = f"head layer {len(channels) + 1}"
        dw = take(lambda c: c.depthwise(inputs) and c.shape[2] == c.shape[3],
                  f"{layer}'s depthwise convolution")
        starts.append(dw.index)
        head_kernels.append(dw.shape[2])
        channels.append(take(lambda c: c.pointwise(inputs), f"{layer}'s 1x1 convolution").out)
    final = take(lambda c: c.pointwise(channels[-1]), "the final 1x1 layer")
    if position != len(convs):
        raise NotConvNeXtPose(f"{len(convs) - position} convolutions after the final layer")
    joints = joint_num or _declared_joints(model) or DEFAULT_JOINTS
    if final.out % joints:
        raise NotConvNeXtPose(f"the final layer's {final.out} outputs are not a multiple of "
                              f"{joints} joints")
    inferred = Inferred(
        depths=tuple(depths), dims=tuple(dims), kernel=kernels.pop(),
        head_channels=tuple(channels), head_kernels=tuple(head_kernels), final_out=final.out,
        joint_num=joints, depth_dim=final.out // joints, head_upsample=None,
        upsample_basis="measured", upsample_reason="read off the graph's Resize nodes")
    return Layout(inferred, tuple(starts), final.index)


def _declared_joints(model) -> int | None:
    for name, role in output_roles(model).items():
        output = next(o for o in model.graph.output if o.name == name)
        if role == COORDS and isinstance(dims(output)[1], int) and dims(output)[1] > 0:
            return dims(output)[1]
    return None


# ---------------------------------------------------------------- upsampling


def head_layer_name(index: int) -> str:
    return f"head.deconv_layers_{index}"


def _place(index: int, where: Layout | None) -> str:
    """The part of the model a node at `index` belongs to."""
    if where is None:
        return "unknown (the graph is not a ConvNeXtPose)"
    if index < where.head_starts[0]:
        return "backbone"
    if index > where.final_index:
        return "after final_layer"
    layer = sum(1 for start in where.head_starts if start < index)
    return head_layer_name(layer)


def _scale(node, known: dict, shape_of: dict) -> list | None:
    """(height, width) factors: the node's constant scales, else output size / input size."""
    inputs = list(node.input) + ["", "", ""]
    if node.op_type == "Upsample":  # scales: an attribute in opset 7, an input from opset 9
        scales = _attributes(node).get("scales")
        values = numpy.asarray(scales) if scales is not None else known.get(inputs[1])
    else:  # Resize: X, scales (opset 10); X, roi, scales, sizes (opset 11 on)
        values = known.get(inputs[1] if len(node.input) == 2 else inputs[2])
    if values is not None and values.size == 4:
        return [float(v) for v in values[2:]]
    before, after = shape_of.get(node.input[0]), shape_of.get(node.output[0])
    if before and after and all(isinstance(v, int) and v > 0 for v in [*before[2:], *after[2:]]):
        return [after[2] / before[2], after[3] / before[3]]
    return None


def upsampling(model, where: Layout | None) -> list[dict]:
    """Every Resize/Upsample node in graph order: the layer it belongs to, its node name and
    op, mode, coordinate_transformation_mode and (height, width) scale (None: unknown)."""
    known, shape_of = constants(model), shapes(model)
    found = []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in ("Resize", "Upsample"):
            continue
        attributes = _attributes(node)
        # Upsample has no coordinate_transformation_mode: its formula is the asymmetric one.
        default = ("half_pixel" if node.op_type == "Resize" and opset(model) >= 11
                   else "asymmetric")
        found.append({
            "layer": _place(index, where),
            "node": node.name or node.output[0],
            "op": node.op_type,
            "mode": _text(attributes.get("mode", "nearest")),
            "coordinate_transformation_mode":
                _text(attributes.get("coordinate_transformation_mode", default)),
            "scale": _scale(node, known, shape_of),
        })
    return found
