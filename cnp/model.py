"""A minimal ConvNeXtPose with the official module tree.

Module and attribute names follow the official implementation, so `state_dict()` has
exactly the official keys, in the official order, with the official shapes
(`backbone.*`, `head.*`) and a released checkpoint loads with `strict=True`.
Stochastic depth (training only, no parameters) is left out: cnp verifies inference.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cnp.specs import BackboneSpec, HeadLayerSpec, VariantSpec, get_spec


class Block(nn.Module):
    """depthwise k×k → BatchNorm → 1×1 (C→4C) → ReLU → 1×1 (4C→C), plus the input."""

    def __init__(self, dim: int, kernel: int = 7):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.BatchNorm2d(dim)
        self.pwconv1 = nn.Conv2d(dim, 4 * dim, 1)
        self.act = nn.ReLU(inplace=True)
        self.pwconv2 = nn.Conv2d(4 * dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))


class ConvNeXtBN(nn.Module):
    """ConvNeXt with BatchNorm in place of LayerNorm and no LayerScale; output stride 32."""

    def __init__(self, spec: BackboneSpec, in_chans: int = 3):
        super().__init__()
        dims = spec.dims
        # Registration order fixes the state_dict order: downsample_layers, stages, norm.
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4), nn.BatchNorm2d(dims[0]))]
            + [nn.Sequential(nn.BatchNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2))
               for i in range(3)]
        )
        self.stages = nn.ModuleList(
            nn.Sequential(*[Block(dims[i], spec.kernel) for _ in range(spec.depths[i])])
            for i in range(4)
        )
        self.norm = nn.BatchNorm2d(dims[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        return self.norm(x)


class DeConv(nn.Module):
    """depthwise k×k → BatchNorm → 1×1 → ReLU → ×2 bilinear (align_corners=True) or identity."""

    def __init__(self, in_channels: int, layer: HeadLayerSpec):
        super().__init__()
        k = layer.kernel
        self.dwconv = nn.Conv2d(in_channels, in_channels, k, padding=k // 2, groups=in_channels)
        self.norm = nn.BatchNorm2d(in_channels)
        self.pwconv = nn.Conv2d(in_channels, layer.out_channels, 1)
        self.act = nn.ReLU(inplace=True)
        # No parameters: whether a layer upsamples shows only in the output's size.
        self.upsample1 = (nn.UpsamplingBilinear2d(scale_factor=2) if layer.upsample == 2
                          else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample1(self.act(self.pwconv(self.norm(self.dwconv(x)))))


class HeadNet(nn.Module):
    """Three DeConv layers and a 1×1 convolution to joint_num × depth_dim channels."""

    def __init__(self, spec: VariantSpec):
        super().__init__()
        first, second, third = spec.head
        c3 = spec.backbone.dims[-1]
        self.deconv_layers_1 = DeConv(c3, first)
        self.deconv_layers_2 = DeConv(first.out_channels, second)
        self.deconv_layers_3 = DeConv(second.out_channels, third)
        self.final_layer = nn.Conv2d(third.out_channels, spec.joint_num * spec.depth_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.deconv_layers_3(self.deconv_layers_2(self.deconv_layers_1(x)))
        return self.final_layer(x)


def soft_argmax(heatmaps: torch.Tensor, joint_num: int, depth_dim: int) -> torch.Tensor:
    """Expected (x, y, z) voxel index of each joint's softmax volume; (N, joint_num, 3).

    Softmax runs over each whole depth_dim × h × w volume. Index ramps are made on the
    heatmaps' own device and dtype (the official code hard-codes `.cuda()`).
    """
    n, _, h, w = heatmaps.shape
    volume = F.softmax(heatmaps.reshape(n, joint_num, depth_dim * h * w), dim=2)
    volume = volume.reshape(n, joint_num, depth_dim, h, w)
    ramp = lambda size: torch.arange(size, device=heatmaps.device, dtype=heatmaps.dtype)
    x = (volume.sum(dim=(2, 3)) * ramp(w)).sum(dim=2, keepdim=True)
    y = (volume.sum(dim=(2, 4)) * ramp(h)).sum(dim=2, keepdim=True)
    z = (volume.sum(dim=(3, 4)) * ramp(depth_dim)).sum(dim=2, keepdim=True)
    return torch.cat((x, y, z), dim=2)


class ConvNeXtPose(nn.Module):
    """image (N, 3, H, W) → backbone → head → soft-argmax → coordinates (N, joint_num, 3)."""

    def __init__(self, spec: VariantSpec):
        super().__init__()
        self.spec = spec
        self.backbone = ConvNeXtBN(spec.backbone)
        self.head = HeadNet(spec)

    def heatmaps(self, image: torch.Tensor) -> torch.Tensor:
        """(N, joint_num·depth_dim, h, w), before soft-argmax."""
        return self.head(self.backbone(image))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return soft_argmax(self.heatmaps(image), self.spec.joint_num, self.spec.depth_dim)


def build(variant: str | VariantSpec, device: str | torch.device = "cpu") -> ConvNeXtPose:
    """A ConvNeXtPose for a variant name or spec, in eval mode.

    On the `meta` device nothing is allocated or computed: shapes and counts only.
    """
    spec = get_spec(variant) if isinstance(variant, str) else variant
    with torch.device(device):
        model = ConvNeXtPose(spec)
    return model.eval()
