"""Golden outputs: seeded weights, a fixed input, heatmaps and coordinates within a tolerance.

A port with the right keys and shapes can still compute the wrong thing. These tests
pin the computation itself, and prove that the pin catches the classic porting mistakes.
Update the goldens after an intended change with `pytest --snapshot-update`.
"""

import json
from pathlib import Path

import pytest
from torch import nn

from cnp import VARIANTS
from cnp.testing import golden_output, mismatches, seeded_input, seeded_model, worst_ratio
from cnp.model import Block


GOLDEN_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "test_golden"

# Deviations in units of the golden tolerance (cnp.testing.RTOL/ATOL). Measured: float64
# and thread counts at most 0.06, every mutation 1000 or more (docs/numerics.md).
NOISE_AT_MOST = 0.2
MUTATION_AT_LEAST = 100.0


def stored_golden(variant: str) -> dict:
    path = GOLDEN_DIR / f"test_golden_output[{variant}].json"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `pytest --snapshot-update` once")
    return json.loads(path.read_text())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_golden_output(variant, snapshot_golden):
    model = seeded_model(variant)
    assert golden_output(model, seeded_input(model.spec)) == snapshot_golden


@pytest.mark.parametrize("variant", ["xs", "l"])  # the smallest and the largest heatmaps
def test_golden_tolerance_absorbs_float64(variant):
    """float64 differs from float32 by more than float32 platforms differ from each other."""
    model = seeded_model(variant).double()
    found = golden_output(model, seeded_input(model.spec).double())
    assert worst_ratio(stored_golden(variant), found) <= NOISE_AT_MOST


def test_golden_batchnorm_is_not_identity():
    """The golden weights would hide a wrong BatchNorm if BatchNorm did nothing."""
    for name, bn in seeded_model("xs").named_modules():
        if isinstance(bn, nn.BatchNorm2d):
            assert bn.running_mean.abs().min() > 0, name
            assert (bn.running_var - 1).abs().min() > 0, name
            assert bn.running_var.min() < 100 * bn.eps, f"{name}: epsilon would not matter"
            gain = bn.weight / (bn.running_var + bn.eps).sqrt()
            assert (gain - 1).abs().max() > 0.1, name
            assert bn.bias.abs().min() > 0, name


# ------------------------------------------------------------------- mutations it catches

def _upsampling(mode: str, **options):
    def mutate(model):
        for layer in (model.head.deconv_layers_1, model.head.deconv_layers_2,
                      model.head.deconv_layers_3):
            if isinstance(layer.upsample1, nn.UpsamplingBilinear2d):
                layer.upsample1 = nn.Upsample(scale_factor=2, mode=mode, **options)
    return mutate


def _batchnorm_eps(eps: float):
    def mutate(model):
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = eps
    return mutate


def _gelu(model):
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.GELU())


def _one_residual_lost(model):
    """One block in the middle of stage 2 returns its branch without the input."""
    block: Block = model.backbone.stages[2][0]
    block.forward = lambda x: block.pwconv2(block.act(block.pwconv1(block.norm(block.dwconv(x)))))


MUTATIONS = {
    "nearest_upsampling": _upsampling("nearest"),
    "bilinear_align_corners_false": _upsampling("bilinear", align_corners=False),
    "batchnorm_eps_1e-6": _batchnorm_eps(1e-6),  # ConvNeXt's LayerNorm epsilon
    "batchnorm_eps_1e-3": _batchnorm_eps(1e-3),  # TensorFlow/Keras' BatchNorm epsilon
    "gelu_for_relu": _gelu,
    "one_residual_lost": _one_residual_lost,
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
@pytest.mark.parametrize("variant", ["xs"])
def test_golden_catches(variant, mutation):
    model = seeded_model(variant)
    MUTATIONS[mutation](model)
    found = golden_output(model, seeded_input(model.spec))
    assert mismatches(stored_golden(variant), found) != []
    assert worst_ratio(stored_golden(variant), found) >= MUTATION_AT_LEAST
