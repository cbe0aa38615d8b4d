"""The built models against the spec page and the paper, one property per test.

Expected values come from docs/spec.md through tests/spec_page.py (its variants table and
the paper's figures), not from cnp/specs.py: a typo in the specs module must fail here.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnp import VARIANTS, UnknownVariantError, build, get_spec, summarize
from spec_page import PAPER_PAGE, RELEASED_PAGE, SPEC_PAGE

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
    return stem + downsample + blocks + [dims[3]] + [dims[3], head[0], head[1]]


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
    height, width = page["input"]
    assert [s.size for s in stages] == [(height // 2**i, width // 2**i) for i in (2, 3, 4, 5)]


@variants
def test_head_layers(variant):
    page = SPEC_PAGE[variant]
    layers = summarize(variant).head_layers
    ins = [page["dims"][3], *page["head"][:2]]
    assert [(h.in_channels, h.out_channels, h.kernel) for h in layers] == [
        (cin, cout, 3) for cin, cout in zip(ins, page["head"])]
    assert summarize(variant).final_layer == (page["head"][2], page["joints"] * page["depth_dim"])


@variants
def test_head_upsampling(variant):
    # Measured from the traced shapes: upsampling has no parameters to count.
    assert list(summarize(variant).head_upsample) == SPEC_PAGE[variant]["upsample"]


@variants
def test_output_shapes(variant):
    page = SPEC_PAGE[variant]
    summary = summarize(variant)
    assert list(summary.heatmap_shape) == page["heatmap_shape"]
    assert list(summary.volume_shape) == [page["joints"], page["depth_dim"], *page["heatmap"]]
    assert summary.coords_shape == (page["joints"], 3)


@variants
def test_params_match_paper(variant):
    assert round(summarize(variant).params / 1e6, 2) == PAPER_PAGE[variant]["params_m"]


@pytest.mark.parametrize("variant", [v for v in VARIANTS if PAPER_PAGE[v]["other_params_m"]])
def test_state_dict_numel_matches_other_documents(variant):
    quoted = PAPER_PAGE[variant]["other_params_m"]
    assert round(summarize(variant).state_dict_numel / 1e6, 2) == quoted


@pytest.mark.parametrize("variant", [v for v in VARIANTS if RELEASED_PAGE[v]["state_dict_numel"]])
def test_state_dict_numel_is_the_released_files(variant):
    # Counted by others from the downloaded files, element for element.
    assert summarize(variant).state_dict_numel == RELEASED_PAGE[variant]["state_dict_numel"]


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
    assert gmacs == pytest.approx(PAPER_PAGE[variant]["gflops"], rel=0.01)


@variants
def test_conv_macs_match_pytorch_flop_counter(variant):
    model = build(variant, device="meta")
    with FlopCounterMode(display=False) as counter:
        model.heatmaps(torch.empty(1, 3, *SPEC_PAGE[variant]["input"], device="meta"))
    assert summarize(variant).macs.conv_weights * 2 == counter.get_total_flops()


def test_macs_of_a_changed_model_follow_its_convolutions():
    # A model changed by hand: a 3×5 depthwise kernel without bias in the first head layer.
    # Weight MACs still match torch's counter; bias adds come from the convs that have one.
    model = build("s", device="meta")
    channels = SPEC_PAGE["s"]["dims"][3]
    model.head.deconv_layers_1.dwconv = nn.Conv2d(channels, channels, (3, 5), padding=(1, 2),
                                                  groups=channels, bias=False, device="meta")
    with FlopCounterMode(display=False) as counter:
        model.heatmaps(torch.empty(1, 3, *SPEC_PAGE["s"]["input"], device="meta"))
    summary = summarize(model)
    assert summary.macs.conv_weights * 2 == counter.get_total_flops()
    assert summary.macs.conv_bias == sum(
        r.out_shape[1] * r.out_shape[2] * r.out_shape[3] for r in summary.layers
        if r.kind == "Conv2d" and model.get_submodule(r.name).bias is not None)


@variants
def test_bias_adds_are_one_per_conv_output(variant):
    summary = summarize(variant)
    conv_outputs = sum(r.out_shape[1] * r.out_shape[2] * r.out_shape[3]
                       for r in summary.layers if r.kind == "Conv2d")
    assert summary.macs.conv_bias == conv_outputs
    assert summary.macs.total == summary.macs.conv_weights + summary.macs.conv_bias


@pytest.mark.parametrize("scale, out_size", [((1.5, 1.0), "12x8"), ((1.0, 1.5), "8x12"),
                                             ((2.0, 1.0), "16x8")],
                         ids=["height", "width", "unequal"])
def test_summary_refuses_a_non_integer_upsampling(scale, out_size):
    # A model changed by hand: its first head layer scales the 8x8 backbone output by
    # `scale`. The measured factor would be a lie, so the summary names layer and sizes.
    model = build("s", device="meta")
    model.head.deconv_layers_1.upsample1 = nn.Upsample(scale_factor=scale, mode="bilinear")
    with pytest.raises(ValueError) as error:
        summarize(model)
    assert "head.deconv_layers_1" in str(error.value)
    assert "8x8" in str(error.value) and out_size in str(error.value)


@variants
def test_builds_on_meta_without_memory(variant):
    model = build(variant, device="meta")
    assert {t.device.type for t in model.state_dict().values()} == {"meta"}
    assert not model.training


@pytest.mark.parametrize("variant", ["xs"])
def test_runs_on_cpu(variant):
    torch.manual_seed(0)
    model = build(variant)
    page = SPEC_PAGE[variant]
    with torch.inference_mode():
        coords = model(torch.randn(2, 3, *page["input"]))
    height, width = page["heatmap"]
    upper = torch.tensor([width - 1, height - 1, page["depth_dim"] - 1], dtype=coords.dtype)
    assert coords.shape == (2, page["joints"], 3)
    assert torch.isfinite(coords).all()
    assert ((coords >= 0) & (coords <= upper)).all()  # expected indices stay in the volume


def test_soft_argmax_follows_the_heatmaps_device():
    model = build(get_spec("xs"), device="meta")
    assert model(torch.empty(1, 3, 256, 256, device="meta")).device.type == "meta"


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(UnknownVariantError, match="known variants: xs, s, m, l"):
        get_spec("xl")


def test_variant_names_are_case_insensitive():
    assert get_spec("XS") is get_spec("xs")


def test_specs_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_spec("l").depth_dim = 32
