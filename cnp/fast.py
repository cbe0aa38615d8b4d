"""A fast inference path that computes the same function as the eager model.

`fast_model(model)` returns a new model (the eager model is left untouched) with:

1. BatchNorm folded into the adjacent convolution wherever the fold is exact:
   - conv → BN (stem, every block's depthwise conv, every head layer's depthwise conv):
     BN(conv(x)) = conv'(x) with W' = s·W, b' = s·(b − mean) + beta, s = gamma/√(var+eps).
   - BN → conv (the three downsamplings: kernel 2, stride 2, no padding): every kernel
     tap reads a real input pixel, so conv(s·x + t) = conv'(x) with W'[o,i] = W[o,i]·s[i],
     b' = b + Σ W[o,i,·,·]·t[i]. With zero padding the border taps would read 0 instead of
     t, so the fold would be inexact: the final backbone BN, which feeds the head's padded
     depthwise conv, is therefore kept (a per-channel affine at 8×8: negligible).
2. The head's last 1×1 conv moved in front of the last ×2 bilinear upsampling (M, L).
   Bilinear interpolation is linear, per channel, and its weights sum to 1, so it commutes
   with a 1×1 conv including its bias: upsample(conv(x)) = conv(upsample(x)) exactly in
   real arithmetic. The conv then runs on a quarter of the pixels: L's 2.4 GMACs there
   become 0.6 (1.8 of its 4.3 GMACs fewer), M's 1.2 become 0.3.
3. Channels-last memory format (mkldnn's fast layout for 1×1 and depthwise convs) for
   the convolutions and the upsampling, kept to the end: `heatmaps()` returns the same
   values and shape as the eager model's in channels-last memory, and soft-argmax reads
   that layout directly instead of copying the volume back to NCHW.

Two engines run that rewritten graph (`fast_model(model, engine=...)`):
- "onnxruntime" (the default on the CPU when the `onnx` extra is installed): the graph is
  written as ONNX from the folded weights and run by ONNX Runtime (cnp.fast_ort, which
  says why: on a shared CPU torch's OpenMP threads stall each other at every operator).
- "torch" (the default otherwise, and on any other device): FastConvNeXtPose below.

Run it under `torch.inference_mode()`; `fast_forward` does that for you.
Floating-point results differ from the eager model only by rounding (summation order):
see tests/test_fast.py for the tolerance and why.
"""

from __future__ import annotations

import copy
import importlib.util

import torch
from torch import nn

from cnp.model import ConvNeXtPose


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = s·x + t per channel."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def conv_bias(conv: nn.Conv2d) -> torch.Tensor:
    return conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)


def fold_bn_after_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv computing bn(conv(x)) (eval mode); exact for any conv."""
    scale, shift = _bn_scale_shift(bn)
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias = nn.Parameter(conv_bias(conv) * scale + shift)
    return fused


def fold_bn_before_conv(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """A conv computing conv(bn(x)) (eval mode). Exact only without padding."""
    if any(conv.padding) or conv.groups != 1:
        raise ValueError("folding a BatchNorm into a following conv needs padding 0, groups 1")
    scale, shift = _bn_scale_shift(bn)
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(1, -1, 1, 1))
        fused.bias = nn.Parameter(conv_bias(conv) + (conv.weight.sum(dim=(2, 3)) @ shift))
    return fused


class FastBlock(nn.Module):
    """A backbone block with its BatchNorm folded into the depthwise conv."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.dwconv = fold_bn_after_conv(block.dwconv, block.norm)
        self.pwconv1 = block.pwconv1
        self.pwconv2 = block.pwconv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pwconv2(torch.relu_(self.pwconv1(self.dwconv(x))))


class FastDeConv(nn.Module):
    """A head layer with its BatchNorm folded; `upsample` False drops the upsampling."""

    def __init__(self, layer: nn.Module, upsample: bool):
        super().__init__()
        self.dwconv = fold_bn_after_conv(layer.dwconv, layer.norm)
        self.pwconv = layer.pwconv
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _maybe_upsample(torch.relu_(self.pwconv(self.dwconv(x))), self.upsample)


def _maybe_upsample(x: torch.Tensor, upsample: bool) -> torch.Tensor:
    # nn.UpsamplingBilinear2d(scale_factor=2) is exactly this call.
    if not upsample:
        return x
    return nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


def _upsamples(layer: nn.Module) -> bool:
    return isinstance(layer.upsample1, nn.UpsamplingBilinear2d)


class FastConvNeXtPose(nn.Module):
    """The same function as ConvNeXtPose, folded and reordered for inference."""

    engine = "torch"

    def __init__(self, model: ConvNeXtPose):
        super().__init__()
        model = copy.deepcopy(model).eval()
        self.spec = model.spec
        backbone, head = model.backbone, model.head
        stem_conv, stem_bn = backbone.downsample_layers[0]
        self.downsample_layers = nn.ModuleList(
            [fold_bn_after_conv(stem_conv, stem_bn)]
            + [fold_bn_before_conv(bn, conv) for bn, conv in backbone.downsample_layers[1:]])
        self.stages = nn.ModuleList(
            nn.Sequential(*[FastBlock(block) for block in stage]) for stage in backbone.stages)
        self.norm = backbone.norm  # feeds a zero-padded conv: folding would be inexact
        layers = [head.deconv_layers_1, head.deconv_layers_2, head.deconv_layers_3]
        # The last layer's upsampling moves behind final_layer (see the module docstring).
        self.upsample_last = _upsamples(layers[-1])
        self.deconv_layers = nn.Sequential(
            *[FastDeConv(layer, _upsamples(layer)) for layer in layers[:-1]],
            FastDeConv(layers[-1], upsample=False))
        self.final_layer = head.final_layer
        self.to(memory_format=torch.channels_last)

    def heatmaps(self, image: torch.Tensor) -> torch.Tensor:
        x = image.contiguous(memory_format=torch.channels_last)
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        x = self.final_layer(self.deconv_layers(self.norm(x)))
        return _maybe_upsample(x, self.upsample_last)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return soft_argmax_channels_last(self.heatmaps(image), self.spec.joint_num,
                                         self.spec.depth_dim)


def soft_argmax_channels_last(heatmaps: torch.Tensor, joint_num: int,
                              depth_dim: int) -> torch.Tensor:
    """cnp.model.soft_argmax for heatmaps in channels-last memory, without a layout copy.

    In channels-last memory (N, J·D, h, w) is laid out as (N, h, w, J, D): viewing it so
    and reducing over (h, w, D) per joint is the same softmax and expectation, while the
    NCHW reshape of the reference would first copy the whole volume (for M and L that
    copy costs more than the head's last convolution).
    """
    n, _, h, w = heatmaps.shape
    volume = heatmaps.permute(0, 2, 3, 1).reshape(n, h * w, joint_num, depth_dim)
    # Reductions over the pixel axis first: it is the outer one, so they vectorize over
    # the contiguous J·D channels; what is left per joint is small.
    peak = volume.amax(dim=1, keepdim=True).amax(dim=3, keepdim=True)  # (N, 1, J, 1)
    weights = (volume - peak).exp_()
    depth = weights.sum(dim=1)  # (N, J, D)
    plane = weights.sum(dim=3).reshape(n, h, w, joint_num)  # (N, h, w, J)
    total = depth.sum(dim=2)  # (N, J)

    def expected(marginal: torch.Tensor, size: int) -> torch.Tensor:
        # marginal: (N, size, J) probability mass per index, up to the common `total`.
        ramp = torch.arange(size, device=heatmaps.device, dtype=heatmaps.dtype)
        return (marginal * ramp[None, :, None]).sum(dim=1) / total

    x = expected(plane.sum(dim=1), w)
    y = expected(plane.sum(dim=2), h)
    z = expected(depth.transpose(1, 2), depth_dim)
    return torch.stack((x, y, z), dim=2)


ENGINES = ("onnxruntime", "torch")


def default_engine(model: nn.Module) -> str:
    """ONNX Runtime for a CPU model when the `onnx` extra is installed, torch otherwise."""
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    installed = all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime"))
    return "onnxruntime" if on_cpu and installed else "torch"


def fast_model(model: ConvNeXtPose, engine: str | None = None):
    """A new, faster model computing model's function (eval mode); model is not changed.

    Called like the eager model (coordinates) and with `.heatmaps(image)`. `engine`: one
    of ENGINES, None for `default_engine(model)`.
    """
    engine = engine or default_engine(model)
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; known engines: {', '.join(ENGINES)}")
    rewritten = FastConvNeXtPose(model).eval()
    if engine == "torch":
        return rewritten
    from cnp.fast_ort import OrtFastModel

    return OrtFastModel(rewritten)


def fast_forward(model, image: torch.Tensor) -> torch.Tensor:
    """Coordinates (N, joint_num, 3) under inference mode (no autograd bookkeeping)."""
    with torch.inference_mode():
        return model(image)
