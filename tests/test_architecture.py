"""The built models against the spec page and the paper, one property per test.

Expected values are written out here from ../shared/convnextpose.md (the spec page) and
the paper's table, not read from cnp/specs.py: a typo in the specs module must fail here.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cnp import VARIANTS, UnknownVariantError, build, get_spec, summarize

ATTO = dict(depths=[2, 2, 6, 2], dims=[40, 80, 160, 320])
FEMTO_L = dict(depths=[3, 3, 9, 3], dims=[48, 96, 192, 384])

# The spec page's variant table.
SPEC_PAGE = {
    "xs": dict(backbone="Atto", **ATTO, head=128, upsample=[2, 2, 1], depth_dim=32, heatmap=32),
    "s": dict(backbone="Femto-L", **FEMTO_L, head=256, upsample=[2, 2, 1], depth_dim=32, heatmap=32),
    "m": dict(backbone="Femto-L", **FEMTO_L, head=256, upsample=[2, 2, 2], depth_dim=64, heatmap=64),
    "l": dict(backbone="Femto-L", **FEMTO_L, head=512, upsample=[2, 2, 2], depth_dim=64, heatmap=64),
}
# The paper's table: params (M, trainable), GFLOPs; and the figures other documents quote.
PAPER = {"xs": (3.53, 0.82), "s": (7.44, 1.76), "m": (7.59, 2.82), "l": (8.38, 4.30)}
OTHER_DOCUMENTS_M = {"s": 7.45, "m": 7.60, "l": 8.39}
JOINTS = 18
INPUT = 256

variants = pytest.mark.parametrize("variant", list(VARIANTS))


def official_keys(variant: str) -> list[str]:
    """The state_dict keys in order, derived from the spec page's naming rules."""
    page = SPEC_PAGE[variant]
    conv = ["weight", "bias"]
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = [f"backbone.downsample_layers.0.0.{p}" for p in conv]
    keys += [f"backbone.downsample_layers.0.1.{p}" for p in bn]
    for i in (1, 2, 3):
        keys += [f"backbone.downsample_layers.{i}.0.{p}" for p in bn]
        keys += [f"backbone.downsample_layers.{i}.1.{p}" for p in conv]
    for i, depth in enumerate(page["depths"]):
        for j in range(depth):
            for layer, params in (("dwconv", conv), ("norm", bn), ("pwconv1", conv), ("pwconv2", conv)):
                keys += [f"backbone.stages.{i}.{j}.{layer}.{p}" for p in params]
    keys += [f"backbone.norm.{p}" for p in bn]
    for n in (1, 2, 3):
        for layer, params in (("dwconv", conv), ("norm", bn), ("pwconv", conv)):
            keys += [f"head.deconv_layers_{n}.{layer}.{p}" for p in params]
    keys += [f"head.final_layer.{p}" for p in conv]
    return keys


def batchnorm_channels(variant: str) -> list[int]:
    """Channels of every BatchNorm the spec page describes."""
    page = SPEC_PAGE[variant]
    dims, head = page["dims"], page["head"]
    stem = [dims[0]]
    downsample = dims[:3]
    blocks = [c for c, d in zip(dims, page["depths"]) for _ in range(d)]
    return stem + downsample + blocks + [dims[3]] + [dims[3], head, head]


@variants
def test_state_dict_keys_are_official(variant):
    assert list(build(variant, device="meta").state_dict()) == official_keys(variant)


@variants
def test_key_counts(variant):
    expected = official_keys(variant)
    buffers = [k for k in expected if k.rsplit(".", 1)[1] in ("running_mean", "running_var",
                                                              "num_batches_tracked")]
    keys = summarize(variant).keys
    assert (keys.total, keys.buffers, keys.params) == (
        len(expected), len(buffers), len(expected) - len(buffers))
    assert keys.backbone == sum(k.startswith("backbone.") for k in expected)
    assert keys.head == sum(k.startswith("head.") for k in expected)


@variants
def test_backbone_stages(variant):
    page = SPEC_PAGE[variant]
    stages = summarize(variant).stages
    assert summarize(variant).backbone == page["backbone"]
    assert [s.blocks for s in stages] == page["depths"]
    assert [s.dim for s in stages] == page["dims"]
    assert [s.kernel for s in stages] == [7, 7, 7, 7]
    assert [s.size for s in stages] == [(64, 64), (32, 32), (16, 16), (8, 8)]  # strides 4..32


@variants
def test_head_layers(variant):
    page = SPEC_PAGE[variant]
    layers = summarize(variant).head_layers
    assert [(h.in_channels, h.out_channels, h.kernel) for h in layers] == [
        (page["dims"][3], page["head"], 3), (page["head"], page["head"], 3),
        (page["head"], page["head"], 3)]
    assert summarize(variant).final_layer == (page["head"], JOINTS * page["depth_dim"])


@variants
def test_head_upsampling(variant):
    # Measured from the traced shapes: upsampling has no parameters to count.
    assert list(summarize(variant).head_upsample) == SPEC_PAGE[variant]["upsample"]


@variants
def test_output_shapes(variant):
    page = SPEC_PAGE[variant]
    side = INPUT // 32 * 2 ** sum(u == 2 for u in page["upsample"])
    summary = summarize(variant)
    assert side == page["heatmap"]
    assert summary.heatmap_shape == (JOINTS * page["depth_dim"], side, side)
    assert summary.volume_shape == (JOINTS, page["depth_dim"], side, side)
    assert summary.coords_shape == (JOINTS, 3)


@variants
def test_params_match_paper(variant):
    assert round(summarize(variant).params / 1e6, 2) == PAPER[variant][0]


@pytest.mark.parametrize("variant", list(OTHER_DOCUMENTS_M))
def test_state_dict_numel_matches_other_documents(variant):
    assert round(summarize(variant).state_dict_numel / 1e6, 2) == OTHER_DOCUMENTS_M[variant]


@variants
def test_count_difference_is_batchnorm_buffers(variant):
    # running_mean and running_var hold C elements each, num_batches_tracked one.
    summary = summarize(variant)
    channels = batchnorm_channels(variant)
    assert summary.batchnorm_layers == len(channels)
    assert summary.state_dict_numel - summary.params == sum(2 * c + 1 for c in channels)
    assert summary.batchnorm_buffer_numel == sum(2 * c + 1 for c in channels)


@variants
def test_gmacs_within_one_percent_of_paper(variant):
    gmacs = summarize(variant).macs.total / 1e9
    assert gmacs == pytest.approx(PAPER[variant][1], rel=0.01)


@variants
def test_conv_macs_match_pytorch_flop_counter(variant):
    model = build(variant, device="meta")
    with FlopCounterMode(display=False) as counter:
        model.heatmaps(torch.empty(1, 3, INPUT, INPUT, device="meta"))
    assert summarize(variant).macs.conv_weights * 2 == counter.get_total_flops()


@variants
def test_bias_adds_are_one_per_conv_output(variant):
    summary = summarize(variant)
    conv_outputs = sum(r.out_shape[1] * r.out_shape[2] * r.out_shape[3]
                       for r in summary.layers if r.kind == "Conv2d")
    assert summary.macs.conv_bias == conv_outputs
    assert summary.macs.total == summary.macs.conv_weights + summary.macs.conv_bias


@variants
def test_builds_on_meta_without_memory(variant):
    model = build(variant, device="meta")
    assert {t.device.type for t in model.state_dict().values()} == {"meta"}
    assert not model.training


@pytest.mark.parametrize("variant", ["xs"])
def test_runs_on_cpu(variant):
    torch.manual_seed(0)
    model = build(variant)
    with torch.inference_mode():
        coords = model(torch.randn(2, 3, INPUT, INPUT))
    side = SPEC_PAGE[variant]["heatmap"]
    assert coords.shape == (2, JOINTS, 3)
    assert torch.isfinite(coords).all()
    assert ((coords >= 0) & (coords <= side - 1)).all()  # expected indices stay in the volume


def test_soft_argmax_follows_the_heatmaps_device():
    model = build(get_spec("xs"), device="meta")
    assert model(torch.empty(1, 3, INPUT, INPUT, device="meta")).device.type == "meta"


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(UnknownVariantError, match="known variants: xs, s, m, l"):
        get_spec("xl")


def test_variant_names_are_case_insensitive():
    assert get_spec("XS") is get_spec("xs")


def test_specs_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_spec("l").depth_dim = 32
