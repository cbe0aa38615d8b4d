"""Throughput per variant × batch × path at 3×256×256, with pytest-benchmark.

Paths: the backends of `cnp bench` (cnp.bench.BACKENDS, built by cnp.bench.make_backend):
`eager`, `fast` (cnp.fast.fast_model, its default engine), `fast-torch` (the same rewrite
run by torch) and, when the `onnx` extra is installed, `onnxruntime` (the plain export);
and `reference`, a plain module written here with the official implementation's forward
structure around the same layer objects: timing it next to `eager` shows cnp's module tree
adds no overhead.

Default run (`python -m pytest`): each body runs once, as a correctness check (see
conftest.py). Timed run: `pytest -k bench --benchmark-only` (add `-k "xs and bench"` for
one variant). Untimed, batch 8 runs for xs only: S, M and L run the same code as at
batch 1 on 8× the data, which would add ~3 s to the default suite; timed, all run.
`onnxruntime` runs only when timed: its export costs 5-20 s per variant here, and the
export's numerics are checked by tests/test_onnx.py.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from cnp import VARIANTS, build, get_spec, soft_argmax, summarize
from cnp.bench import NEEDS, gflop_s, make_backend, matmul_roofline
from spec_page import SPEC_PAGE

BATCHES = (1, 8)
ONNX_EXTRA = all(importlib.util.find_spec(name) for name in NEEDS["onnxruntime"])
PATHS = ("eager", "fast", "fast-torch", "reference") + (("onnxruntime",) if ONNX_EXTRA else ())
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class ReferenceBlock(nn.Module):
    """The official Block.forward, statement by statement (drop_path is identity in eval)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.dwconv, self.norm = block.dwconv, block.norm
        self.pwconv1, self.act, self.pwconv2 = block.pwconv1, block.act, block.pwconv2

    def forward(self, x):
        shortcut = x
        x = self.dwconv(x)
        x = self.norm(x)
        x = self.pwconv1(x)
        x = self.act(x)
        x = self.pwconv2(x)
        return shortcut + x


class ReferenceModel(nn.Module):
    """Official structure: backbone loop, Sequential head layers, soft-argmax."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.spec = model.spec
        backbone, head = model.backbone, model.head
        self.downsample_layers = backbone.downsample_layers
        self.stages = nn.ModuleList(
            nn.Sequential(*[ReferenceBlock(b) for b in stage]) for stage in backbone.stages)
        self.norm = backbone.norm
        self.head = nn.Sequential(*[
            nn.Sequential(layer.dwconv, layer.norm, layer.pwconv, layer.act, layer.upsample1)
            for layer in (head.deconv_layers_1, head.deconv_layers_2, head.deconv_layers_3)],
            head.final_layer)

    def forward(self, x):
        for i in range(4):
            x = self.downsample_layers[i](x)
            x = self.stages[i](x)
        heatmaps = self.head(self.norm(x))
        return soft_argmax(heatmaps, self.spec.joint_num, self.spec.depth_dim)


_MODELS: dict[tuple[str, str, str], object] = {}


def model_for(variant: str, path: str, device: str):
    """image → coordinates, built once per session: building is not what is measured."""
    key = (variant, path, device)
    if key not in _MODELS:
        eager = build(variant, device=device)
        _MODELS[key] = (ReferenceModel(eager) if path == "reference"
                        else make_backend(path, eager).run)
    return _MODELS[key]


@pytest.fixture(scope="session")
def roofline_gflops_s() -> dict[str, float]:
    """fp32 matmul GFLOP/s per device, measured lazily in this process."""
    return {}


def _cases():
    for device in DEVICES:
        for variant in VARIANTS:
            for batch in BATCHES:
                for path in PATHS:
                    if path == "onnxruntime" and device != "cpu":
                        continue  # cnp's ONNX Runtime sessions run on the CPU
                    suffix = "" if device == "cpu" else f"-{device}"
                    yield pytest.param(variant, batch, path, device,
                                       id=f"{variant}-batch{batch}-{path}{suffix}")


@pytest.mark.parametrize("variant, batch, path, device", list(_cases()))
def test_throughput(benchmark, roofline_gflops_s, variant, batch, path, device):
    if batch > 1 and benchmark.disabled and variant != "xs":
        pytest.skip("batch > 1 runs untimed for xs only (same code; keeps the default run fast)")
    if path == "onnxruntime" and benchmark.disabled:
        pytest.skip("onnxruntime runs when timed only (its export costs 5-20 s; the export's "
                    "numerics are tests/test_onnx.py's)")
    spec = get_spec(variant)
    model = model_for(variant, path, device)
    image = torch.randn(batch, 3, *spec.input_size, device=device)
    benchmark.group = f"{variant}-batch{batch}{'' if device == 'cpu' else '-' + device}"

    def forward():
        with torch.inference_mode():
            coords = model(image)
        if device != "cpu":
            torch.cuda.synchronize()
        return coords

    coords = benchmark(forward)
    # Real work was done: one finite (x, y, z) per joint, inside the spec page's volume.
    page = SPEC_PAGE[variant]
    assert coords.shape == (batch, page["joints"], 3)
    assert torch.isfinite(coords).all()
    h, w = page["heatmap"]
    upper = torch.tensor([w - 1, h - 1, page["depth_dim"] - 1], device=device)
    assert ((coords >= 0) & (coords <= upper)).all()
    if benchmark.enabled:
        if device not in roofline_gflops_s:
            roofline_gflops_s[device] = matmul_roofline(device=device)
        img_s = batch / benchmark.stats.stats.median
        rate = gflop_s(summarize(spec).macs.total, img_s)
        benchmark.extra_info.update({
            "img_s": round(img_s, 2),
            "ms_img": round(1e3 / img_s, 3),
            "gflops_s": round(rate, 2),  # 2 × cnp MACs per second (effective for `fast`)
            "roofline_gflops_s": round(roofline_gflops_s[device], 2),
            "roofline_fraction": round(rate / roofline_gflops_s[device], 4),
            "threads": torch.get_num_threads(),
        })


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_reference_structure_computes_the_eager_function(variant):
    """Same layers, same operations, same order: the outputs are bit-identical, so the
    reference timing compares structure overhead only."""
    eager = build(variant)
    image = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        assert torch.equal(ReferenceModel(eager)(image), eager(image))
