"""ConvNeXtPose implementations written the ways users' code is written, not cnp's way:
what `cnp check` and `pytest --cnp-model` are tested on.

OFFICIAL_STYLE follows the official code's habits (see "How implementations in the wild are
written" in the spec page): a module-level config mutated by the factory before building,
head layers as positional nn.Sequential (the released M and L files' naming), ReLU and
upsampling by F.interpolate in the head's forward, a soft-argmax that puts its index ramps
on the GPU with `.cuda()`, and only the 2UP head (M and L raise NotImplementedError).
Its module constants are the knobs the wrong versions turn (`official_style(BN_EPS="1e-3")`).

FORK_STYLE is a fork's: a frozen settings table, a configurable head kept in an
nn.ModuleList (`head.deconv_layers.N.*`: other names, same tensors), upsampling modules,
and a soft-argmax that runs anywhere, so its coordinates can be compared on CPU.
"""

from __future__ import annotations

import re

OFFICIAL_STYLE = '''
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

ALIGN_CORNERS = True
BN_EPS = 1e-5
S_HEATMAP_SIDE = 32
NAMED_HEAD_CHILDREN = False


class Config:
    backbone_cfg = ((2, 2, 6, 2), (40, 80, 160, 320))
    depth = 128
    depth_dim = 32
    output_shape = (32, 32)


cfg = Config()


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.BatchNorm2d(dim, eps=BN_EPS)
        self.pwconv1 = nn.Conv2d(dim, 4 * dim, 1)
        self.pwconv2 = nn.Conv2d(4 * dim, dim, 1)

    def forward(self, x):
        return x + self.pwconv2(F.relu(self.pwconv1(self.norm(self.dwconv(x)))))


class Backbone(nn.Module):
    def __init__(self, depths, dims):
        super().__init__()
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(3, dims[0], 4, stride=4), nn.BatchNorm2d(dims[0], eps=BN_EPS))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                nn.BatchNorm2d(dims[i], eps=BN_EPS), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2)))
        self.stages = nn.ModuleList(
            nn.Sequential(*(Block(dims[i]) for _ in range(depths[i]))) for i in range(4))
        self.norm = nn.BatchNorm2d(dims[3], eps=BN_EPS)

    def forward(self, x):
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.norm(x)


def head_layer(cin, cout):
    parts = (nn.Conv2d(cin, cin, 3, padding=1, groups=cin), nn.BatchNorm2d(cin, eps=BN_EPS),
             nn.Conv2d(cin, cout, 1))
    if NAMED_HEAD_CHILDREN:
        return nn.Sequential(OrderedDict(zip(("dwconv", "norm", "pwconv"), parts)))
    return nn.Sequential(*parts)


class Head(nn.Module):
    def __init__(self, cin, joint_num):
        super().__init__()
        self.deconv_layers_1 = head_layer(cin, cfg.depth)
        self.deconv_layers_2 = head_layer(cfg.depth, cfg.depth)
        self.deconv_layers_3 = head_layer(cfg.depth, cfg.depth)
        self.final_layer = nn.Conv2d(cfg.depth, joint_num * cfg.depth_dim, 1)
        upsampling_layers = {32: 2, 64: 3}[cfg.output_shape[0]]
        self.upsample = [i < upsampling_layers for i in range(3)]

    def forward(self, x):
        layers = (self.deconv_layers_1, self.deconv_layers_2, self.deconv_layers_3)
        for layer, up in zip(layers, self.upsample):
            x = F.relu(layer(x))
            if up:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=ALIGN_CORNERS)
        return self.final_layer(x)


def soft_argmax(heatmaps, joint_num):
    d, (h, w) = cfg.depth_dim, cfg.output_shape
    volume = F.softmax(heatmaps.reshape(-1, joint_num, d * h * w), 2)
    volume = volume.reshape(-1, joint_num, d, h, w)
    x = (volume.sum(dim=(2, 3)) * torch.arange(w).float().cuda()).sum(2, keepdim=True)
    y = (volume.sum(dim=(2, 4)) * torch.arange(h).float().cuda()).sum(2, keepdim=True)
    z = (volume.sum(dim=(3, 4)) * torch.arange(d).float().cuda()).sum(2, keepdim=True)
    return torch.cat((x, y, z), 2)


class PoseNet(nn.Module):
    def __init__(self, backbone, head, joint_num):
        super().__init__()
        self.backbone, self.head, self.joint_num = backbone, head, joint_num

    def forward(self, input_img, target=None):
        return soft_argmax(self.head(self.backbone(input_img)), self.joint_num)


def get_pose_net(cfg, is_train, joint_num):
    depths, dims = cfg.backbone_cfg
    return PoseNet(Backbone(depths, dims), Head(dims[-1], joint_num), joint_num)


def build(variant):
    if variant not in ("xs", "s"):
        raise NotImplementedError("this head is 2UP only")
    if variant == "xs":
        cfg.backbone_cfg, cfg.depth, side = ((2, 2, 6, 2), (40, 80, 160, 320)), 128, 32
    else:
        cfg.backbone_cfg, cfg.depth, side = ((3, 3, 9, 3), (48, 96, 192, 384)), 256, S_HEATMAP_SIDE
    cfg.depth_dim = 32
    cfg.output_shape = (side, side)
    return get_pose_net(cfg, False, 18)
'''

FORK_STYLE = '''
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Settings:
    depths: tuple
    dims: tuple
    width: int
    upsampling_layers: int
    depth_dim: int


ATTO, FEMTO = ((2, 2, 6, 2), (40, 80, 160, 320)), ((3, 3, 9, 3), (48, 96, 192, 384))
TABLE = {"xs": Settings(*ATTO, 128, 2, 32), "s": Settings(*FEMTO, 256, 2, 32),
         "m": Settings(*FEMTO, 256, 3, 64), "l": Settings(*FEMTO, 512, 3, 64)}


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.BatchNorm2d(dim)
        self.pwconv1 = nn.Conv2d(dim, 4 * dim, 1)
        self.act = nn.ReLU()
        self.pwconv2 = nn.Conv2d(4 * dim, dim, 1)

    def forward(self, x):
        return x + self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))


class Encoder(nn.Module):
    def __init__(self, s):
        super().__init__()
        d = s.dims
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, d[0], 4, 4), nn.BatchNorm2d(d[0]))]
            + [nn.Sequential(nn.BatchNorm2d(d[i]), nn.Conv2d(d[i], d[i + 1], 2, 2)) for i in range(3)])
        self.stages = nn.ModuleList(
            nn.Sequential(*[Block(d[i]) for _ in range(s.depths[i])]) for i in range(4))
        self.norm = nn.BatchNorm2d(d[3])

    def forward(self, x):
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.norm(x)


class UpLayer(nn.Module):
    def __init__(self, cin, cout, up):
        super().__init__()
        self.dwconv = nn.Conv2d(cin, cin, 3, padding=1, groups=cin)
        self.norm = nn.BatchNorm2d(cin)
        self.pwconv = nn.Conv2d(cin, cout, 1)
        self.up = nn.UpsamplingBilinear2d(scale_factor=2) if up else nn.Identity()

    def forward(self, x):
        return self.up(torch.relu(self.pwconv(self.norm(self.dwconv(x)))))


class Decoder(nn.Module):
    def __init__(self, s, joints):
        super().__init__()
        widths = [s.dims[3], s.width, s.width]
        self.deconv_layers = nn.ModuleList(
            UpLayer(c, s.width, i < s.upsampling_layers) for i, c in enumerate(widths))
        self.final_layer = nn.Conv2d(s.width, joints * s.depth_dim, 1)

    def forward(self, x):
        for layer in self.deconv_layers:
            x = layer(x)
        return self.final_layer(x)


class Pose(nn.Module):
    def __init__(self, s, joints=18):
        super().__init__()
        self.joints, self.depth_dim = joints, s.depth_dim
        self.backbone = Encoder(s)
        self.head = Decoder(s, joints)

    def forward(self, image):
        maps = self.head(self.backbone(image))
        n, _, h, w = maps.shape
        p = maps.reshape(n, self.joints, -1).softmax(-1).reshape(n, self.joints, self.depth_dim, h, w)
        ramp = lambda k: torch.arange(k, dtype=maps.dtype, device=maps.device)
        return torch.stack([(p.sum((2, 3)) * ramp(w)).sum(-1), (p.sum((2, 4)) * ramp(h)).sum(-1),
                            (p.sum((3, 4)) * ramp(self.depth_dim)).sum(-1)], -1)


def make(variant):
    return Pose(TABLE[variant])
'''


def official_style(**constants: str) -> str:
    """OFFICIAL_STYLE with some module constants set otherwise."""
    text = OFFICIAL_STYLE
    for name, value in constants.items():
        text, count = re.subn(rf"^{name} = .*$", f"{name} = {value}", text, flags=re.MULTILINE)
        if count != 1:
            raise ValueError(f"OFFICIAL_STYLE has no constant {name}")
    return text


# file stem → source; the TARGET is "<stem>.py:build" (official style) or "fork.py:make".
IMPLEMENTATIONS = {
    "official": OFFICIAL_STYLE,
    "fork": FORK_STYLE,
    "align_corners_false": official_style(ALIGN_CORNERS="False"),
    "batchnorm_eps_1e_3": official_style(BN_EPS="1e-3"),
    "s_upsamples_three_times": official_style(S_HEATMAP_SIDE="64"),
}
