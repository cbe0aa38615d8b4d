"""Test support for any ConvNeXtPose test suite: golden outputs (seeded weights, a fixed
input and a tolerant fingerprint of the output). Imported by cnp's own tests, by `cnp
check` and by the pytest plugin; the model, summaries and checkpoint readers never import it.

Shapes and counts catch a wrong layer, not a wrong computation (nearest instead of
bilinear upsampling, another BatchNorm epsilon, GELU for ReLU, a lost residual). A golden
output does: seeded weights with non-trivial BatchNorm statistics, a fixed input, and a
fingerprint of heatmaps and coordinates stored once and compared with a tolerance.

Weights and input come from an integer hash of (seed, tensor name, element index), not
from torch's generator, whose streams may change between releases and platforms: the
golden input of a model is the same everywhere, and a changed module does not reshuffle
the weights of the others. Float noise (summation order, SIMD width, threads) is left to
the tolerance, see `RTOL` and `ATOL`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import zlib

import torch
from torch import nn

from cnp.model import ConvNeXtPose, build, soft_argmax
from cnp.specs import VariantSpec, get_spec

GOLDEN_SEED = 2023

# Each stored float x passes when |found - x| <= ATOL + RTOL·|x|. Measured with
# tests/golden_margins.py: float64 instead of float32, or another thread count, moves the
# fingerprint by at most 0.06 of this tolerance; each mutation in tests/test_golden.py by
# 1000 times it or more. float32 noise is ~1e-6 relative; 1e-4 sits well clear of both.
RTOL = 1e-4
ATOL = 1e-4  # heatmap values are O(1) by construction (std 3 to 6), coordinates O(10)

SIGNIFICANT_DIGITS = 8  # stored precision: beyond float32's ~7 digits, far below RTOL
SAMPLE_SIZE = 32  # heatmap elements stored one by one, at hashed positions
PROJECTIONS = 4  # sums of all heatmap elements with hashed ±1 weights

# Residual branches end at a weaker convolution, as in trained ConvNeXts; otherwise the
# 9-block stage of Femto-L multiplies the activations' scale by about 40.
BRANCH_GAIN = 0.5
# Heatmaps with a spread of a few units make peaked volumes, so the coordinates after
# soft-argmax move away from the centre and differ from joint to joint.
HEATMAP_GAIN = 4.0

_MASK32 = 0xFFFFFFFF


def hash32(count: int, stream: int) -> torch.Tensor:
    """`count` int64 values in [0, 2**32): an integer hash of (stream, index), exact anywhere.

    Every product stays below 2**63, so int64 arithmetic never overflows.
    """
    h = (torch.arange(count, dtype=torch.int64) * 0x9E3779B1 + (stream & _MASK32)) & _MASK32
    for multiplier in (0x7FEB352D, 0x046CA68B, 0x2C1B3C6D):
        h = h ^ (h >> 16)
        h = (h * multiplier) & _MASK32
    return h ^ (h >> 15)


def hash_uniform(count: int, stream: int) -> torch.Tensor:
    """`count` float64 values in [0, 1), from `hash32`."""
    return hash32(count, stream).to(torch.float64) / 2.0**32


def _stream(seed: int, name: str) -> int:
    return zlib.crc32(f"{seed}:{name}".encode())


def _uniform(seed: int, name: str, like: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """float64 values shaped like `like`; they are derived further in float64 and rounded
    once, on `copy_` into the model, so no platform's float32 pow or sqrt enters them."""
    u = hash_uniform(like.numel(), _stream(seed, name)).reshape(like.shape)
    return low + (high - low) * u


def seed_weights(model: ConvNeXtPose, seed: int = GOLDEN_SEED) -> ConvNeXtPose:
    """Overwrite every parameter and BatchNorm statistic with hashed values; returns `model`.

    Convolutions: uniform with variance 1/fan_in (activations stay O(1) through the
    network), biases in ±0.1. BatchNorm is far from the identity: running_mean in ±0.5,
    running_var log-uniform in [1e-4, 1] (small variances make epsilon matter, as in
    trained checkpoints), bias in ±0.2, weight = sqrt(running_var)·U(0.5, 1.5) so the
    per-channel gain weight/sqrt(var + eps) stays O(1).
    """
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                bound = math.sqrt(3.0 / module.weight[0].numel())
                if name.endswith("pwconv2"):
                    bound *= BRANCH_GAIN
                elif name.endswith("final_layer"):
                    bound *= HEATMAP_GAIN
                module.weight.copy_(_uniform(seed, f"{name}.weight", module.weight, -bound, bound))
                module.bias.copy_(_uniform(seed, f"{name}.bias", module.bias, -0.1, 0.1))
            elif isinstance(module, nn.BatchNorm2d):
                exponent = _uniform(seed, f"{name}.running_var", module.running_var, -4.0, 0.0)
                variance = 10.0**exponent
                module.running_var.copy_(variance)
                module.running_mean.copy_(
                    _uniform(seed, f"{name}.running_mean", module.running_mean, -0.5, 0.5))
                gain = _uniform(seed, f"{name}.weight", module.weight, 0.5, 1.5)
                module.weight.copy_(variance.sqrt() * gain)
                module.bias.copy_(_uniform(seed, f"{name}.bias", module.bias, -0.2, 0.2))
                module.num_batches_tracked.fill_(1000)
    return model.eval()


def seeded_model(variant: str | VariantSpec, seed: int = GOLDEN_SEED) -> ConvNeXtPose:
    """A CPU model of `variant` with the golden weights (see `seed_weights`), in eval mode.

    A new model on every call (callers may change it); the weights are hashed once per
    spec and seed in a process and copied in (hashing L's 8.4M values takes about a second).
    """
    spec = get_spec(variant) if isinstance(variant, str) else variant
    # Built on meta and allocated uninitialized: every entry is overwritten by the load.
    model = build(spec, device="meta").to_empty(device="cpu")
    model.load_state_dict(_seeded_state(spec, seed), strict=True)
    return model.eval()


@functools.lru_cache(maxsize=8)
def _seeded_state(spec: VariantSpec, seed: int) -> dict[str, torch.Tensor]:
    return seed_weights(build(spec, device="cpu"), seed).state_dict()


def seeded_input(spec: VariantSpec, batch: int = 1, seed: int = GOLDEN_SEED) -> torch.Tensor:
    """A fixed image batch (batch, 3, H, W), values uniform in [-2, 2] like a normalized image."""
    shape = torch.empty(batch, 3, *spec.input_size)
    return _uniform(seed, "input", shape, -2.0, 2.0).to(torch.float32)


def _signs(count: int, name: str) -> torch.Tensor:
    return (hash_uniform(count, _stream(0, name)) >= 0.5).to(torch.float64) * 2.0 - 1.0


def _rounded(values) -> list | float:
    if isinstance(values, list):
        return [_rounded(v) for v in values]
    return float(f"{values:.{SIGNIFICANT_DIGITS}g}")


def fingerprint(heatmaps: torch.Tensor, coords: torch.Tensor) -> dict:
    """What a golden file stores of one output (batch 1): JSON-ready, floats rounded.

    heatmaps: statistics; the mean of each joint's volume; PROJECTIONS sums of all
    elements with hashed ±1 weights, over sqrt(count) (every element counts: one element
    moved by δ moves each by δ/sqrt(count)); SAMPLE_SIZE single elements at hashed
    positions, stored with their flat index. coords: every value.
    """
    if heatmaps.shape[0] != 1 or coords.shape[0] != 1:
        raise ValueError("a golden fingerprint is taken of a batch of 1")
    joints = coords.shape[1]
    flat = heatmaps.detach().to(torch.float64).flatten()
    count = flat.numel()
    index = (hash_uniform(SAMPLE_SIZE, _stream(0, "sample")) * count).long()
    # Divided by sqrt(count): O(std) like the elements, so ATOL means the same for both.
    # Element (c, i) of the (channels, h·w) matrix weighs sign_c · sign_i: every element
    # counts with weight ±1, and each projection costs one matrix-vector product.
    matrix = flat.reshape(heatmaps.shape[1], -1)
    projections = [
        (_signs(matrix.shape[0], f"projection-rows-{p}") @ matrix
         @ _signs(matrix.shape[1], f"projection-columns-{p}")).item() / math.sqrt(count)
        for p in range(PROJECTIONS)
    ]
    return {
        "heatmaps": {
            "shape": list(heatmaps.shape),
            "mean": _rounded(flat.mean().item()),
            "std": _rounded(flat.std().item()),
            "min": _rounded(flat.min().item()),
            "max": _rounded(flat.max().item()),
            "joint_means": _rounded(flat.reshape(joints, -1).mean(dim=1).tolist()),
            "projections": _rounded(projections),
            "sample_index": index.tolist(),
            "sample": _rounded(flat[index].tolist()),
        },
        "coords": {
            "shape": list(coords.shape),
            "values": _rounded(coords.detach().to(torch.float64)[0].tolist()),
        },
    }


def golden_output(model: ConvNeXtPose, image: torch.Tensor) -> dict:
    """The fingerprint of `model` on `image`: heatmaps, then soft-argmax of those heatmaps.

    Soft-argmax runs in float64: in float32 its sums over a 64³ volume alone differ by
    about 1e-3 voxel with the summation order, which is noise, not a change.
    """
    with torch.no_grad():
        heatmaps = model.heatmaps(image)
        coords = soft_argmax(heatmaps.to(torch.float64), model.spec.joint_num,
                             model.spec.depth_dim)
    return fingerprint(heatmaps, coords)


def deviations(expected, found, path: str = "") -> list[tuple[str, float]]:
    """(where, ratio) for every stored value: ratio = |found - x| / (ATOL + RTOL·|x|).

    A value passes at ratio <= 1. Integers (shapes, indices), strings and the structure
    itself must be equal: a difference there has ratio inf.
    """
    if isinstance(expected, dict) and isinstance(found, dict):
        if expected.keys() != found.keys():
            return [(f"{path or '/'}: keys {sorted(found)} != {sorted(expected)}", math.inf)]
        return [d for key in expected
                for d in deviations(expected[key], found[key], f"{path}/{key}")]
    if isinstance(expected, list) and isinstance(found, list):
        if len(expected) != len(found):
            return [(f"{path}: length {len(found)} != {len(expected)}", math.inf)]
        return [d for i, (e, f) in enumerate(zip(expected, found))
                for d in deviations(e, f, f"{path}[{i}]")]
    if isinstance(expected, float) and isinstance(found, (int, float)):
        ratio = abs(found - expected) / (ATOL + RTOL * abs(expected))
        return [(f"{path}: {found!r} != {expected!r} (rtol {RTOL}, atol {ATOL})", ratio)]
    ratio = 0.0 if type(expected) is type(found) and expected == found else math.inf
    return [(f"{path}: {found!r} != {expected!r}", ratio)]


def mismatches(expected, found) -> list[str]:
    """Where `found` differs from `expected` beyond the tolerance; [] when they agree."""
    return [where for where, ratio in deviations(expected, found) if not ratio <= 1.0]


def worst_ratio(expected, found) -> float:
    """The largest deviation in units of the tolerance: < 1 passes, > 1 fails."""
    return max((ratio for _, ratio in deviations(expected, found)), default=0.0)


@contextlib.contextmanager
def one_thread():
    """torch on one thread inside: for reference computations (seeding weights, cnp's eager
    model as the numerics' reference). On a busy 2-core machine a second OpenMP thread
    mostly spin-waits (measured: seeding L 0.7 s on one thread, 10 s on two). Results do
    not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
