"""Counts and shapes in closed form, derived from the spec page alone, against the model.

Every formula below is read off the architecture description in docs/spec.md (not off
cnp/model.py): stem Conv2d(3→C0, 4, stride 4) + BN; downsample i: BN +
Conv2d(C(i-1)→Ci, 2, stride 2); block: dw k×k conv + BN + 1×1 C→4C + ReLU + 1×1 4C→C;
final BN; three head layers dw k×k + BN + 1×1 + ReLU (+ ×2 upsampling); final 1×1 conv to
joint_num·depth_dim. Every conv has a bias; every BatchNorm has weight and bias
(parameters) and running_mean, running_var, num_batches_tracked (buffers).
MACs follow cnp.analysis.MAC_CONVENTION: conv weight MACs + one bias add per conv output.

Hypothesis draws specs from tests/strategies.py; the four published variants run too.
"""

import pytest
import torch
from hypothesis import given

from cnp import VARIANTS, build, get_spec, summarize
from cnp.analysis import millions
from cnp.specs import VariantSpec
from spec_page import PAPER_PAGE
from tests.strategies import variant_specs



def _head_channels(spec: VariantSpec) -> list[tuple[int, int, int, int]]:
    """(in_channels, out_channels, kernel, upsample) of each head layer."""
    ins = [spec.backbone.dims[3]] + [layer.out_channels for layer in spec.head[:2]]
    return [(c, layer.out_channels, layer.kernel, layer.upsample)
            for c, layer in zip(ins, spec.head)]


def _areas(spec: VariantSpec) -> tuple[list[int], list[int], int]:
    """Spatial areas h·w: of stages 0..3, of each head layer's input, of the heatmaps."""
    height, width = spec.input_size
    stages = [(height // (4 * 2**i)) * (width // (4 * 2**i)) for i in range(4)]
    head, area = [], stages[3]
    for layer in spec.head:
        head.append(area)
        area *= layer.upsample**2
    return stages, head, area


def closed_form_params(spec: VariantSpec) -> dict:
    C, D, k = spec.backbone.dims, spec.backbone.depths, spec.backbone.kernel
    stem = 3 * 4 * 4 * C[0] + C[0] + 2 * C[0]
    downsample = sum(2 * C[i - 1] + C[i - 1] * C[i] * 2 * 2 + C[i] for i in (1, 2, 3))
    # dw C·k² + C, BN 2C, 1×1 C·4C + 4C, 1×1 4C·C + C
    blocks = sum(D[i] * (8 * C[i] ** 2 + (k * k + 8) * C[i]) for i in range(4))
    backbone = stem + downsample + blocks + 2 * C[3]
    head = sum(cin * k * k + cin + 2 * cin + cin * cout + cout
               for cin, cout, k, _ in _head_channels(spec))
    out_channels = spec.joint_num * spec.depth_dim
    head += spec.head[2].out_channels * out_channels + out_channels
    return {"params": backbone + head, "params_backbone": backbone, "params_head": head}


def _batchnorm_channels(spec: VariantSpec) -> list[int]:
    C, D = spec.backbone.dims, spec.backbone.depths
    return ([C[0]] + [C[0], C[1], C[2]] + [C[i] for i in range(4) for _ in range(D[i])] + [C[3]]
            + [cin for cin, *_ in _head_channels(spec)])


def closed_form_buffers(spec: VariantSpec) -> dict:
    channels = _batchnorm_channels(spec)
    buffers = sum(2 * c + 1 for c in channels)  # running_mean, running_var: C; the count: 1
    return {
        "batchnorm_layers": len(channels),
        "batchnorm_buffer_numel": buffers,
        "state_dict_numel": closed_form_params(spec)["params"] + buffers,
    }


def closed_form_keys(spec: VariantSpec) -> dict:
    blocks = sum(spec.backbone.depths)
    convs = {"backbone": 1 + 3 + 3 * blocks, "head": 3 * 2 + 1}
    norms = {"backbone": 1 + 3 + blocks + 1, "head": 3}
    keys = {part: 2 * convs[part] + 5 * norms[part] for part in convs}  # weight+bias; 2+3
    return {
        "params": 2 * sum(convs.values()) + 2 * sum(norms.values()),
        "buffers": 3 * sum(norms.values()),
        "total": keys["backbone"] + keys["head"],
        **keys,
    }


def closed_form_macs(spec: VariantSpec) -> dict:
    C, D, k = spec.backbone.dims, spec.backbone.depths, spec.backbone.kernel
    stages, head_in, out_area = _areas(spec)
    # (output channels, per-output weight MACs, output area) of every convolution
    convs = [(C[0], 3 * 4 * 4, stages[0])]
    convs += [(C[i], C[i - 1] * 2 * 2, stages[i]) for i in (1, 2, 3)]
    for i in range(4):
        convs += D[i] * [(C[i], k * k, stages[i]), (4 * C[i], C[i], stages[i]),
                         (C[i], 4 * C[i], stages[i])]
    for (cin, cout, kernel, _), area in zip(_head_channels(spec), head_in):
        convs += [(cin, kernel * kernel, area), (cout, cin, area)]
    convs.append((spec.joint_num * spec.depth_dim, spec.head[2].out_channels, out_area))
    weights = sum(c * per * area for c, per, area in convs)
    bias = sum(c * area for c, _, area in convs)
    head = list(zip(_head_channels(spec), head_in))
    return {
        "total": weights + bias,
        "conv_weights": weights,
        "conv_bias": bias,
        "batchnorm": (C[0] * stages[0] + sum(C[i] * stages[i] for i in range(3))
                      + sum(D[i] * C[i] * stages[i] for i in range(4)) + C[3] * stages[3]
                      + sum(cin * area for (cin, *_), area in head)),
        "relu": (sum(D[i] * 4 * C[i] * stages[i] for i in range(4))
                 + sum(cout * area for (_, cout, *_), area in head)),
        "upsample": sum(cout * 4 * area for (_, cout, _, up), area in head if up == 2),
        "residual_add": sum(D[i] * C[i] * stages[i] for i in range(4)),
    }


def closed_form_shapes(spec: VariantSpec) -> dict:
    """The spec page: heatmaps joint_num·depth_dim × (H/32)·2^U × (W/32)·2^U."""
    upsampling = sum(1 for layer in spec.head if layer.upsample == 2)
    h, w = (size // 32 * 2**upsampling for size in spec.input_size)
    return {
        "heatmap_shape": (spec.joint_num * spec.depth_dim, h, w),
        "volume_shape": (spec.joint_num, spec.depth_dim, h, w),
        "coords_shape": (spec.joint_num, 3),
    }


def reported(spec: VariantSpec) -> dict:
    """What cnp.summarize reports of the model built on `meta`, in the closed forms' terms."""
    summary = summarize(build(spec, device="meta"))
    keys = summary.keys
    return {
        "params": {"params": summary.params, "params_backbone": summary.params_backbone,
                   "params_head": summary.params_head},
        "buffers": {"batchnorm_layers": summary.batchnorm_layers,
                    "batchnorm_buffer_numel": summary.batchnorm_buffer_numel,
                    "state_dict_numel": summary.state_dict_numel},
        "keys": {"params": keys.params, "buffers": keys.buffers, "total": keys.total,
                 "backbone": keys.backbone, "head": keys.head},
        "macs": {name: getattr(summary.macs, name) for name in MAC_PARTS},
        "shapes": {"heatmap_shape": summary.heatmap_shape, "volume_shape": summary.volume_shape,
                   "coords_shape": summary.coords_shape},
    }


CLOSED_FORMS = {
    "params": closed_form_params,
    "buffers": closed_form_buffers,
    "keys": closed_form_keys,
    "macs": closed_form_macs,
    "shapes": closed_form_shapes,
}
MAC_PARTS = ("total", "conv_weights", "conv_bias", "batchnorm", "relu", "upsample",
             "residual_add")


# ---------------------------------------------------------------- random valid specs

# One test for all quantities: the meta trace dominates the cost, and a failing example
# shows the whole dict diff (params, buffers, keys, macs, shapes) at once.
@given(variant_specs())
def test_summary_equals_closed_forms_for_random_specs(spec):
    assert reported(spec) == {quantity: form(spec) for quantity, form in CLOSED_FORMS.items()}


@given(variant_specs())
def test_cpu_forward_shapes_follow_the_spec_formula(spec):
    model = build(spec)
    image = torch.randn(2, 3, *spec.input_size)
    with torch.no_grad():
        heatmaps = model.heatmaps(image)
        coords = model(image)
    shapes = closed_form_shapes(spec)
    assert tuple(heatmaps.shape) == (2, *shapes["heatmap_shape"])
    assert tuple(coords.shape) == (2, *shapes["coords_shape"])


# ------------------------------------------------------------------ published variants

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_published_counts_are_closed_form(variant):
    spec = get_spec(variant)
    assert reported(spec) == {quantity: form(spec) for quantity, form in CLOSED_FORMS.items()}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_closed_forms_agree_with_the_paper(variant):
    """The formulas themselves, against the paper's printed parameter count and GFLOPs."""
    spec, paper = get_spec(variant), PAPER_PAGE[variant]
    assert millions(closed_form_params(spec)["params"]) == paper["params_m"]
    gmacs = closed_form_macs(spec)["total"] / 1e9
    assert abs(gmacs - paper["gflops"]) <= 0.01 * paper["gflops"]
    if paper["other_params_m"] is not None:
        assert millions(closed_form_buffers(spec)["state_dict_numel"]) == paper["other_params_m"]
