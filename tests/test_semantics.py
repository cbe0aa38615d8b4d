"""Forward semantics, checked against values derived by hand, not against torch's own ops.

The spec page (docs/spec.md) fixes what each operation computes: bilinear ×2 upsampling
with align_corners=True, soft-argmax as the expectation over a whole softmax volume, a
residual block output = input + branch, eval-mode BatchNorm with running statistics.
"""

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from cnp import build, soft_argmax
from cnp.testing import seed_weights
from cnp.model import Block


# ------------------------------------------------------------------------- upsampling

def head_upsampling():
    """The upsampling module of the first head layer of a built model (every variant: ×2)."""
    return build("s", device="meta").head.deconv_layers_1.upsample1  # no state: runs on CPU


def test_upsampling_is_bilinear_align_corners_true_on_2x2():
    # f(y, x) = 3x + 6y + 3xy interpolates corners 0, 3, 6, 12; align_corners=True puts
    # the 4 outputs of each axis at source positions 0, 1/3, 2/3, 1.
    image = torch.tensor([[[[0.0, 3.0], [6.0, 12.0]]]])
    expected = torch.tensor([[[
        [0.0, 1.0, 2.0, 3.0],
        [2.0, 10 / 3, 14 / 3, 6.0],
        [4.0, 17 / 3, 22 / 3, 9.0],
        [6.0, 8.0, 10.0, 12.0],
    ]]])
    torch.testing.assert_close(head_upsampling()(image), expected)


def test_upsampling_maps_ends_to_ends_on_a_row_of_3():
    # 3 → 6 samples at source positions 0, 0.4, 0.8, 1.2, 1.6, 2 (step (3-1)/(6-1)).
    # align_corners=False would give 0, 0.75, 2.25, 4.5, 7.5, 9.
    row = torch.tensor([[[[0.0, 3.0, 9.0]]]])
    expected_row = torch.tensor([0.0, 1.2, 2.4, 4.2, 6.6, 9.0])
    out = head_upsampling()(row)
    assert out.shape == (1, 1, 2, 6)
    torch.testing.assert_close(out[0, 0], expected_row.expand(2, 6))


def test_head_layers_without_upsampling_pass_through():
    layer = build("s", device="meta").head.deconv_layers_3  # "2UP": the third keeps the size
    x = torch.randn(1, 4, 5, 7)
    assert torch.equal(layer.upsample1(x), x)


# ------------------------------------------------------------------------ soft-argmax

volumes = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6))


@given(volumes, st.data())
def test_soft_argmax_of_a_one_hot_volume_is_its_voxel(shape, data):
    joints, depth, h, w = shape
    heatmaps = torch.zeros(1, joints * depth, h, w)
    voxels = []
    for j in range(joints):
        z, y, x = (data.draw(st.integers(0, n - 1)) for n in (depth, h, w))
        heatmaps[0, j * depth + z, y, x] = 200.0  # exp(-200) is 0 in float32: exact one-hot
        voxels.append([x, y, z])
    expected = torch.tensor([voxels], dtype=torch.float32)
    assert torch.equal(soft_argmax(heatmaps, joints, depth), expected)


@given(volumes)
def test_soft_argmax_of_a_uniform_volume_is_its_centre(shape):
    joints, depth, h, w = shape
    coords = soft_argmax(torch.full((2, joints * depth, h, w), 0.7), joints, depth)
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2, (depth - 1) / 2])
    torch.testing.assert_close(coords, centre.expand(2, joints, 3))


@given(volumes, st.integers(0, 2**32 - 1), st.floats(0.1, 100.0))
def test_soft_argmax_stays_inside_the_volume(shape, seed, scale):
    joints, depth, h, w = shape
    generator = torch.Generator().manual_seed(seed)
    heatmaps = scale * torch.randn(1, joints * depth, h, w, generator=generator)
    coords = soft_argmax(heatmaps, joints, depth)[0]
    upper = torch.tensor([w - 1, h - 1, depth - 1], dtype=torch.float32)
    slack = 1e-5 * (upper + 1)  # float32 rounding of the expectation
    assert torch.all(coords >= -slack) and torch.all(coords <= upper + slack)


def test_soft_argmax_is_differentiable():
    heatmaps = torch.randn(2, 3 * 4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_argmax(t, 3, 4), (heatmaps,))


# ------------------------------------------------------------------ blocks, BatchNorm

def test_block_default_kernel_is_the_papers_7x7():
    # A Block built without a kernel, as a user porting a layer would, is ConvNeXt's 7×7
    # depthwise convolution, padded to keep the size.
    block = Block(16)
    assert (block.dwconv.kernel_size, block.dwconv.padding, block.dwconv.groups) == ((7, 7), (3, 3), 16)


def test_block_with_a_zeroed_branch_is_the_identity():
    block = Block(16, kernel=7).eval()
    with torch.no_grad():
        block.pwconv2.weight.zero_()
        block.pwconv2.bias.zero_()
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        assert torch.equal(block(x), x)


def test_batchnorm_in_eval_uses_running_statistics():
    model = seed_weights(build("xs"))  # running statistics far from (0, 1)
    bn = model.backbone.stages[1][0].norm
    x = 3.0 * torch.randn(4, bn.num_features, 5, 5) + 2.0
    mean, var, weight, bias = (t.view(-1, 1, 1).detach()
                               for t in (bn.running_mean, bn.running_var, bn.weight, bn.bias))
    by_hand = (x - mean) / torch.sqrt(var + 1e-5) * weight + bias
    before = (bn.running_mean.clone(), bn.running_var.clone())
    with torch.no_grad():
        torch.testing.assert_close(bn(x), by_hand)
        # Each sample on its own: the batch's statistics play no part.
        torch.testing.assert_close(bn(x[:1]), by_hand[:1])
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])


def test_every_batchnorm_uses_the_pytorch_default_epsilon():
    """1e-5, the official code's nn.BatchNorm2d default; the goldens depend on it too."""
    norms = [m for m in build("l", device="meta").modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-5 for m in norms)
