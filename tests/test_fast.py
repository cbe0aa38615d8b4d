"""The fast inference path computes the eager model's function, for every variant.

BatchNorm statistics and affine parameters are randomized (non-trivial: freshly built
BatchNorms are identities, which would hide a wrong fold).

Tolerance (float32). The fast path reorders sums (folded weights, mkldnn channels-last
kernels, the 1×1 conv before the upsampling), so results differ from eager by rounding
only. Float32's unit roundoff is 6e-8; measured differences are ≤ 1e-6 of the heatmaps'
largest magnitude. Heatmaps must agree within HEATMAP_TOL × max|eager heatmap| (about
150 float32 ulps of the largest value): loose for any summation order, yet ~1e4 times
tighter than a real fold error, which moves whole channels by O(max) (see
test_tolerance_catches_an_inexact_fold). Coordinates are in heatmap units (0..63) after
a softmax over up to 64³ voxels, summed in a different order by the channels-last
soft-argmax: float32 summation order alone moves them by up to ~1e-4 (measured 1.2e-4 on
L), so they must agree within COORDS_ATOL = 1e-3 heatmap units, a thousandth of a voxel.
Eager float32 is itself not that close to its function when the heatmaps are peaked: with
the golden weights (heatmap std 3-6) M's and L's float32 coordinates are 2.3e-3 from the
float64 evaluation (the rounding of Softmax's normalization over 64³ voxels). The fast path
must be within COORDS_ATOL of that exact evaluation too (measured: 1e-5 to 3.4e-5).

Both engines that run the rewritten graph are checked against eager: torch
(FastConvNeXtPose) and ONNX Runtime (cnp.fast_ort, the default where the `onnx` extra is
installed; its cases skip, saying so, where it is not).
"""

import importlib.util

import pytest
import torch
from torch import nn

from cnp import VARIANTS, build, get_spec, soft_argmax
from cnp.fast import (ENGINES, default_engine, fast_forward, fast_model, fold_bn_after_conv,
                      fold_bn_before_conv, soft_argmax_channels_last)
from cnp.testing import seeded_input, seeded_model
from scopes import module_unless_mutating
from spec_page import SPEC_PAGE

HEATMAP_TOL = 1e-5
COORDS_ATOL = 1e-3
ONNX_EXTRA = all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime"))

def require_engine(engine: str) -> None:
    if engine == "onnxruntime" and not ONNX_EXTRA:
        pytest.skip("the onnxruntime engine needs the 'onnx' extra: pip install 'cnp[onnx]'")


def randomize_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            c = bn.num_features
            bn.running_mean.copy_(torch.randn(c, generator=generator) * 0.5)
            bn.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.25)
            bn.weight.copy_(torch.rand(c, generator=generator) + 0.5)
            bn.bias.copy_(torch.randn(c, generator=generator) * 0.5)
    return model


def assert_heatmaps_close(found: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().item()
    worst = (found - expected).abs().max().item()
    assert worst <= HEATMAP_TOL * scale, f"max difference {worst:.3g} vs scale {scale:.3g}"


class EagerRuns(dict):
    """variant → (eager model with random BatchNorms, image, heatmaps, coordinates),
    computed on first use and shared by both engines' cases."""

    def __missing__(self, variant):
        spec = get_spec(variant)
        eager = randomize_batchnorms(build(spec))
        image = torch.randn(1, 3, *spec.input_size, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            heatmaps = eager.heatmaps(image)
            coords = soft_argmax(heatmaps, spec.joint_num, spec.depth_dim)
        self[variant] = (eager, image, heatmaps, coords)
        return self[variant]


@pytest.fixture(scope=module_unless_mutating)
def eager_runs():
    return EagerRuns()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fast_model_computes_the_eager_function(eager_runs, variant, engine):
    require_engine(engine)
    eager, image, expected, coords_expected = eager_runs[variant]
    fast = fast_model(eager, engine=engine)
    assert fast.engine == engine
    with torch.inference_mode():
        found, coords_found = fast.heatmaps(image), fast(image)
    assert found.shape == expected.shape
    assert_heatmaps_close(found, expected)
    torch.testing.assert_close(coords_found, coords_expected, rtol=0, atol=COORDS_ATOL)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fast_coordinates_are_the_exact_function_with_golden_weights(variant, engine):
    require_engine(engine)
    eager = seeded_model(variant)
    image = seeded_input(eager.spec)
    with torch.inference_mode():
        found = fast_model(eager, engine=engine)(image)
        exact = eager.double()(image.double())
    torch.testing.assert_close(found.double(), exact, rtol=0, atol=COORDS_ATOL)



def test_onnxruntime_engine_runs_a_float64_model_and_image_in_float32():
    # ONNX Runtime's graph is float32 whatever the model's dtype; the image is converted too.
    require_engine("onnxruntime")
    model = seeded_model("xs").double()
    image = seeded_input(model.spec).double()
    with torch.inference_mode():
        exact = model(image)
    found = fast_forward(fast_model(model, engine="onnxruntime"), image)
    assert found.dtype == torch.float32
    torch.testing.assert_close(found.double(), exact, rtol=0, atol=COORDS_ATOL)


@pytest.mark.parametrize("engine", ENGINES)
def test_each_joints_softmax_is_its_own(engine):
    # Joint 0's heatmap lies 200 below the others: a softmax shared across joints would
    # underflow to zero for it (exp(-200) in float32) and give no coordinates.
    require_engine(engine)
    model = seeded_model("xs")
    with torch.no_grad():
        model.head.final_layer.bias[:model.spec.depth_dim] -= 200
    image = seeded_input(model.spec)
    with torch.inference_mode():
        expected = model(image)
    found = fast_forward(fast_model(model, engine=engine), image)
    torch.testing.assert_close(found, expected, rtol=0, atol=COORDS_ATOL)


def test_onnxruntime_engines_graph_declares_the_models_inputs_and_outputs():
    # The graph a user may save (cnp.fast_ort.to_onnx): valid, named and shaped as the spec
    # says, and versioned for every onnxruntime since 1.10 (IR version 8, opset 17).
    require_engine("onnxruntime")
    import onnx

    from cnp.fast import FastConvNeXtPose
    from cnp.fast_ort import to_onnx

    proto = to_onnx(FastConvNeXtPose(build("xs")))
    onnx.checker.check_model(proto, full_check=True)

    def shapes(values) -> dict:
        return {value.name: [dim.dim_param or dim.dim_value
                             for dim in value.type.tensor_type.shape.dim] for value in values}

    page = SPEC_PAGE["xs"]
    assert shapes(proto.graph.input) == {"image": ["batch", 3, *page["input"]]}
    assert shapes(proto.graph.output) == {"heatmaps": ["batch", *page["heatmap_shape"]],
                                          "coords": ["batch", page["joints"], 3]}
    assert proto.ir_version == 8 and [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    assert proto.producer_name == "cnp.fast_ort"


@pytest.mark.parametrize("engine", ENGINES)
def test_fast_model_carries_the_models_spec(engine):
    require_engine(engine)
    model = build("xs")
    assert fast_model(model, engine=engine).spec == model.spec

def test_onnxruntime_is_the_default_engine_on_the_cpu_when_installed():
    assert default_engine(build("xs")) == ("onnxruntime" if ONNX_EXTRA else "torch")


def test_a_model_off_the_cpu_gets_the_torch_engine():
    assert default_engine(build("xs", device="meta")) == "torch"


def test_an_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="unknown engine 'tvm'; known engines: onnxruntime, torch"):
        fast_model(build("xs", device="meta"), engine="tvm")


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format],
                         ids=["channels-last", "nchw"])
def test_channels_last_soft_argmax_is_the_reference(layout):
    joints, depth = 5, 6
    heatmaps = 3 * torch.randn(2, joints * depth, 7, 9, generator=torch.Generator().manual_seed(3))
    found = soft_argmax_channels_last(heatmaps.contiguous(memory_format=layout), joints, depth)
    torch.testing.assert_close(found, soft_argmax(heatmaps, joints, depth), rtol=0, atol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_fast_forward_gives_the_eager_coordinates_without_autograd(engine):
    require_engine(engine)
    eager = randomize_batchnorms(build("xs"))
    image = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    found = fast_forward(fast_model(eager, engine=engine), image)
    with torch.inference_mode():
        expected = eager(image)
    assert found.shape == (2, SPEC_PAGE["xs"]["joints"], 3) and not found.requires_grad
    torch.testing.assert_close(found, expected, rtol=0, atol=COORDS_ATOL)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fast_model_keeps_only_the_final_batchnorm(variant):
    fast = fast_model(build(variant, device="meta"))
    batchnorms = [name for name, m in fast.named_modules() if isinstance(m, nn.BatchNorm2d)]
    # The final backbone BN feeds a zero-padded conv: folding it would be inexact.
    assert batchnorms == ["norm"]


def test_fast_model_leaves_the_eager_model_unchanged():
    eager = randomize_batchnorms(build("xs"))
    before = {k: v.clone() for k, v in eager.state_dict().items()}
    fast_model(eager)
    after = eager.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(isinstance(m.norm, nn.BatchNorm2d) for m in eager.backbone.stages[0])


def test_fast_model_shares_nothing_with_the_eager_model():
    """A user who keeps training the eager model keeps it in training mode, and its
    parameters are not the fast model's (whose layout and values fast_model changes)."""
    eager = build("xs").train()
    fast = fast_model(eager, engine="torch")
    assert all(module.training for module in eager.modules())
    pointers = {p.data_ptr() for p in eager.parameters()}
    assert not pointers & {p.data_ptr() for p in fast.parameters()}


def test_fast_model_keeps_its_conv_weights_channels_last():
    """Channels-last is the layout oneDNN's convolutions run fastest in on a CPU: weights
    stored so are not converted at each call."""
    fast = fast_model(build("xs"), engine="torch")
    weights = [(name, p) for name, p in fast.named_parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last)
                           for _, p in weights)


def _random_bn(channels: int) -> nn.BatchNorm2d:
    return randomize_batchnorms(nn.BatchNorm2d(channels).eval(), seed=2)


def test_bn_after_a_depthwise_conv_folds_exactly():
    conv, bn = nn.Conv2d(8, 8, 7, padding=3, groups=8), _random_bn(8)
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        assert_heatmaps_close(fold_bn_after_conv(conv, bn)(x), bn(conv(x)))


def test_bn_before_an_unpadded_strided_conv_folds_exactly():
    bn, conv = _random_bn(8), nn.Conv2d(8, 16, 2, stride=2)
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        assert_heatmaps_close(fold_bn_before_conv(bn, conv)(x), conv(bn(x)))


def test_bn_before_a_padded_conv_is_refused():
    with pytest.raises(ValueError, match="padding 0"):
        fold_bn_before_conv(_random_bn(8), nn.Conv2d(8, 8, 3, padding=1))


def test_tolerance_catches_an_inexact_fold():
    """Folding a BN into a following zero-padded conv is wrong only at the border: the
    tolerance must still see it, or it would not catch a wrong fold elsewhere either."""
    bn, conv = _random_bn(8), nn.Conv2d(8, 8, 3, padding=1)
    unpadded = nn.Conv2d(8, 8, 3)
    unpadded.load_state_dict(conv.state_dict())
    folded = fold_bn_before_conv(bn, unpadded)
    folded.padding = (1, 1)  # the inexact fold the fast path refuses to make
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad(), pytest.raises(AssertionError, match="max difference"):
        assert_heatmaps_close(folded(x), conv(bn(x)))
