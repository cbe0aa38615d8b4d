"""Architecture summaries computed from a built model, never typed in.

Everything here is read off a model: counts from its parameters and state_dict, channel
dims and block counts from its weights, spatial sizes and the upsampling factor of each
head layer from one forward pass. Upsampling has no parameters, so the pass is the only
place it shows. On the `meta` device that pass allocates nothing and computes nothing.

Multiply-accumulate convention (named, because profilers differ by about 1%):
  cnp MACs = convolution weight MACs + one MAC per convolution output element (bias add).
Convolution weight MACs are what torch.utils.flop_counter reports (FLOPs / 2) and what the
official code's profiler (torchprofile) counts. BatchNorm, ReLU, upsampling, the residual
adds and soft-argmax are listed separately and left out of the total.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
from torch import nn

from cnp.checks import Check, equal, plain
from cnp.model import Block, ConvNeXtPose, DeConv, build
from cnp.specs import VariantSpec, get_spec, paper_figures

MAC_CONVENTION = "conv weight MACs + conv bias adds (BatchNorm, ReLU, upsampling, residual adds excluded)"
BATCHNORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class KeyCounts:
    """Numbers of state_dict keys."""

    params: int
    buffers: int
    total: int
    backbone: int
    head: int


@dataclass(frozen=True)
class StageSummary:
    index: int
    blocks: int
    dim: int
    kernel: int  # depthwise kernel of the stage's blocks
    size: tuple[int, int]  # (h, w) of the stage's output


@dataclass(frozen=True)
class HeadLayerSummary:
    name: str
    in_channels: int
    out_channels: int
    kernel: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    upsample: int  # measured: out_size / in_size


@dataclass(frozen=True)
class MacCounts:
    convention: str
    total: int  # conv_weights + conv_bias
    conv_weights: int
    conv_bias: int
    batchnorm: int  # one per element: eval-mode BatchNorm is a per-channel affine
    relu: int
    upsample: int  # one per output element
    residual_add: int

    @property
    def all_elementwise(self) -> int:
        """The total if every listed operation counted one MAC per element."""
        return self.total + self.batchnorm + self.relu + self.upsample + self.residual_add


@dataclass(frozen=True)
class LayerRecord:
    """One leaf module as it ran: what `cnp summary` prints row by row."""

    name: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    macs: int  # under MAC_CONVENTION


@dataclass(frozen=True)
class Summary:
    variant: str
    backbone: str
    input_shape: tuple[int, int, int]  # (3, H, W)
    params: int  # trainable parameters: the paper's definition
    params_backbone: int
    params_head: int
    state_dict_numel: int  # every state_dict element, BatchNorm running statistics included
    batchnorm_buffer_numel: int  # running_mean + running_var + num_batches_tracked
    batchnorm_layers: int
    keys: KeyCounts
    stages: tuple[StageSummary, ...]
    head_layers: tuple[HeadLayerSummary, ...]
    final_layer: tuple[int, int]  # (in_channels, out_channels)
    heatmap_shape: tuple[int, int, int]  # (joint_num·depth_dim, h, w)
    volume_shape: tuple[int, int, int, int]  # (joint_num, depth_dim, h, w)
    coords_shape: tuple[int, int]  # (joint_num, 3)
    macs: MacCounts
    layers: tuple[LayerRecord, ...]

    @property
    def head_upsample(self) -> tuple[int, ...]:
        return tuple(layer.upsample for layer in self.head_layers)

    def to_dict(self) -> dict:
        """Plain JSON-ready data (tuples become lists)."""
        return plain(dataclasses.asdict(self))


def _conv_macs(conv: nn.Conv2d, out: torch.Tensor) -> tuple[int, int]:
    """(weight MACs, bias adds): each output element takes in/groups · kh · kw products."""
    per_output = conv.weight.shape[1] * conv.weight.shape[2] * conv.weight.shape[3]
    bias = out.numel() if conv.bias is not None else 0
    return out.numel() * per_output, bias


def _trace(model: ConvNeXtPose, image: torch.Tensor):
    """Run the model once with hooks; return leaf records, shapes of interest, MAC parts."""
    records: list[LayerRecord] = []
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    parts = dict(conv_weights=0, conv_bias=0, batchnorm=0, relu=0, upsample=0, residual_add=0)
    names = {module: name for name, module in model.named_modules()}

    def on_forward(module, inputs, output):
        name = names[module]
        in_shape, out_shape = tuple(inputs[0].shape), tuple(output.shape)
        shapes[name] = (in_shape, out_shape)
        if isinstance(module, Block):
            parts["residual_add"] += output.numel()
        if any(True for _ in module.children()):
            return
        macs = 0
        if isinstance(module, nn.Conv2d):
            weights, bias = _conv_macs(module, output)
            parts["conv_weights"] += weights
            parts["conv_bias"] += bias
            macs = weights + bias
        elif isinstance(module, nn.BatchNorm2d):
            parts["batchnorm"] += output.numel()
        elif isinstance(module, nn.ReLU):
            parts["relu"] += output.numel()
        elif isinstance(module, nn.UpsamplingBilinear2d):
            parts["upsample"] += output.numel()
        params = sum(p.numel() for p in module.parameters(recurse=False))
        records.append(LayerRecord(name, type(module).__name__, in_shape, out_shape, params, macs))

    handles = [m.register_forward_hook(on_forward) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            coords = model(image)
    finally:
        for handle in handles:
            handle.remove()
    return records, shapes, parts, shapes["head"][1], coords.shape


def summarize(model: ConvNeXtPose | VariantSpec | str) -> Summary:
    """Summarize a built model (or build one on `meta` from a variant name or spec)."""
    if isinstance(model, ConvNeXtPose):
        return _summarize_model(model)
    return _summarize_spec(get_spec(model) if isinstance(model, str) else model)


@functools.lru_cache(maxsize=64)
def _summarize_spec(spec: VariantSpec) -> Summary:
    # A summary is a function of the frozen spec alone: trace each spec once per process.
    return _summarize_model(build(spec, device="meta"))


def _summarize_model(model: ConvNeXtPose) -> Summary:
    spec = model.spec
    device = next(model.parameters()).device
    image = torch.empty(1, 3, *spec.input_size, device=device)
    records, shapes, parts, heatmap_shape, coords_shape = _trace(model, image)

    state = model.state_dict()
    param_names = {name for name, _ in model.named_parameters()}
    bn_buffers = [t for k, t in state.items() if k.rsplit(".", 1)[-1] in BATCHNORM_BUFFERS]
    keys = KeyCounts(
        params=sum(1 for k in state if k in param_names),
        buffers=sum(1 for k in state if k not in param_names),
        total=len(state),
        backbone=sum(1 for k in state if k.startswith("backbone.")),
        head=sum(1 for k in state if k.startswith("head.")),
    )

    stages = tuple(
        StageSummary(
            index=i,
            blocks=len(stage),
            dim=stage[0].dwconv.weight.shape[0],
            kernel=stage[0].dwconv.weight.shape[-1],
            size=tuple(shapes[f"backbone.stages.{i}"][1][2:]),
        )
        for i, stage in enumerate(model.backbone.stages)
    )

    head_layers = []
    for name, module in model.head.named_children():
        if not isinstance(module, DeConv):
            continue
        (_, _, h_in, w_in), (_, _, h_out, w_out) = shapes[f"head.{name}"]
        if h_out % h_in or w_out % w_in or h_out // h_in != w_out // w_in:
            raise ValueError(f"head.{name}: {h_in}x{w_in} -> {h_out}x{w_out} is no integer scaling")
        head_layers.append(HeadLayerSummary(
            name=name,
            in_channels=module.dwconv.weight.shape[0],
            out_channels=module.pwconv.weight.shape[0],
            kernel=module.dwconv.weight.shape[-1],
            in_size=(h_in, w_in),
            out_size=(h_out, w_out),
            upsample=h_out // h_in,
        ))

    final = model.head.final_layer.weight
    _, channels, h, w = heatmap_shape
    joints = coords_shape[1]
    return Summary(
        variant=spec.name,
        backbone=spec.backbone.name,
        input_shape=(3, *spec.input_size),
        params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        params_backbone=sum(p.numel() for p in model.backbone.parameters()),
        params_head=sum(p.numel() for p in model.head.parameters()),
        state_dict_numel=sum(t.numel() for t in state.values()),
        batchnorm_buffer_numel=sum(t.numel() for t in bn_buffers),
        batchnorm_layers=sum(1 for m in model.modules() if isinstance(m, nn.BatchNorm2d)),
        keys=keys,
        stages=stages,
        head_layers=tuple(head_layers),
        final_layer=(final.shape[1], final.shape[0]),
        heatmap_shape=(channels, h, w),
        volume_shape=(joints, channels // joints, h, w),
        coords_shape=(joints, coords_shape[2]),
        macs=MacCounts(convention=MAC_CONVENTION,
                       total=parts["conv_weights"] + parts["conv_bias"], **parts),
        layers=tuple(records),
    )


# ---------------------------------------------------------------- against the paper

GMACS_TOLERANCE = 0.01  # profilers differ by about 1% (bias adds, BatchNorm, upsampling)


def millions(count: int) -> float:
    """A count in millions at the paper's printed precision (0.01M)."""
    return round(count / 1e6, 2)


def compare(spec: VariantSpec, summary: Summary) -> tuple[Check, ...]:
    """Every cell of the summary that the spec or the paper fixes, with a verdict."""
    checks = [
        equal("backbone.depths", spec.backbone.depths, [s.blocks for s in summary.stages]),
        equal("backbone.dims", spec.backbone.dims, [s.dim for s in summary.stages]),
        equal("head.channels", [h.out_channels for h in spec.head],
              [h.out_channels for h in summary.head_layers]),
        equal("head.upsample", spec.head_upsample, summary.head_upsample),
        equal("depth_dim", spec.depth_dim, summary.volume_shape[1]),
        equal("heatmap_shape", [spec.joint_num * spec.depth_dim, *spec.heatmap_size],
              summary.heatmap_shape),
    ]
    paper = paper_figures(spec)
    if paper is not None:
        checks.append(equal("params_m", paper.params_m, millions(summary.params), source="paper"))
        # In whole MACs, so that a count exactly 1% off passes on every platform.
        paper_macs = round(paper.gflops * 1e9)
        checks.append(Check("gflops", paper.gflops, round(summary.macs.total / 1e9, 3),
                            abs(summary.macs.total - paper_macs) <= paper_macs * GMACS_TOLERANCE,
                            "paper", detail="within 1%: profilers differ by about that"))
        if paper.other_params_m is not None:
            checks.append(equal("state_dict_m", paper.other_params_m,
                                millions(summary.state_dict_numel), source="other documents"))
    return tuple(checks)
