"""Throughput of the eager and the fast model, with the context that makes a figure readable.

Every figure is a median over repeated runs after warm-up. Eager and fast runs alternate
(round-robin), so a burst of load from another process hits both alike and their ratio
stays meaningful on a shared machine.

Units (stated because both are common):
  GFLOP/s = 2 × MACs / seconds / 1e9, with MACs = `cnp.summarize(v).macs.total` per image
  (cnp's MAC convention, see cnp.analysis). One multiply-accumulate is two FLOPs.
  The fast path executes fewer MACs than the model nominally has (cnp.fast moves the
  last 1×1 conv in front of the last upsampling), so its GFLOP/s on the model's nominal
  MACs is an *effective* rate; `fast_executed_gflops_s` counts what it really executes.
Roofline: the median GFLOP/s of an fp32 `torch.mm` of ROOFLINE_SIZE² matrices, measured in
the same process, same threads, same device: what this machine reaches on the friendliest
dense kernel. roofline_fraction = GFLOP/s / that.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from cnp.analysis import summarize
from cnp.fast import fast_model
from cnp.model import build
from cnp.specs import get_spec

ROOFLINE_SIZE = 1024  # large enough for a blocked GEMM at full speed, small enough for cache


@dataclass(frozen=True)
class Timing:
    """Seconds per call of repeated runs of one callable processing `batch` images."""

    seconds: tuple[float, ...]
    batch: int

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def img_s(self) -> float:
        return self.batch / self.median_s

    @property
    def ms_img(self) -> float:
        return self.median_s * 1e3 / self.batch


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(calls: dict[str, Callable[[], object]], batch: int, repeats: int,
                     warmup: int = 2, device: str | torch.device = "cpu") -> dict[str, Timing]:
    """Median-ready timings of each callable, run round-robin `repeats` times after warm-up."""
    device = torch.device(device)
    for _ in range(warmup):
        for call in calls.values():
            call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            _synchronize(device)
            start = time.perf_counter()
            call()
            _synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(s), batch) for name, s in seconds.items()}


def gflop_s(macs_per_image: int, img_s: float) -> float:
    """GFLOP/s with one MAC = 2 FLOPs."""
    return 2 * macs_per_image * img_s / 1e9


def matmul_roofline(size: int = ROOFLINE_SIZE, repeats: int = 10,
                    device: str | torch.device = "cpu") -> float:
    """Median GFLOP/s of an fp32 size×size×size torch.mm on this device and thread count."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    with torch.inference_mode():
        timing = time_interleaved({"mm": lambda: torch.mm(a, b)}, batch=1, repeats=repeats,
                                  warmup=3, device=device)["mm"]
    return 2 * size**3 / timing.median_s / 1e9


def executed_conv_macs(model: torch.nn.Module, input_size: tuple[int, int]) -> int:
    """Conv weight MACs one image really costs in `model` (torch's FLOP counter / 2), on meta."""
    model = model.to("meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model.heatmaps(torch.empty(1, 3, *input_size, device="meta"))
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class BenchResult:
    variant: str
    batch: int
    device: str
    repeats: int
    eager_ms_img: float
    fast_ms_img: float
    eager_img_s: float
    fast_img_s: float
    speedup: float  # fast img/s ÷ eager img/s, medians of the same interleaved run
    macs: int  # per image, cnp.summarize(v).macs.total
    gflops_s: float  # fast path, on the model's nominal MACs (effective rate)
    eager_gflops_s: float
    fast_executed_gflops_s: float  # fast path, on the conv MACs it really executes
    roofline_gflops_s: float
    roofline_fraction: float  # gflops_s / roofline_gflops_s
    eager_roofline_fraction: float

    def to_dict(self) -> dict:
        return asdict(self)


def bench_variant(variant: str, batch: int = 1, repeats: int = 10, warmup: int = 2,
                  device: str = "cpu", roofline_gflops_s: float | None = None) -> BenchResult:
    """Eager vs fast throughput of one variant at 3×H×W input (random weights: speed does
    not depend on their values), measured round-robin in this process."""
    spec = get_spec(variant)
    eager = build(spec, device=device)
    fast = fast_model(eager)
    image = torch.randn(batch, 3, *spec.input_size, device=device)
    if roofline_gflops_s is None:
        roofline_gflops_s = matmul_roofline(device=device)
    with torch.inference_mode():
        timings = time_interleaved({"eager": lambda: eager(image), "fast": lambda: fast(image)},
                                   batch=batch, repeats=repeats, warmup=warmup, device=device)
    e, f = timings["eager"], timings["fast"]
    macs = summarize(spec).macs.total
    fast_conv_macs = executed_conv_macs(fast_model(build(spec, device="meta")), spec.input_size)
    fast_rate, eager_rate = gflop_s(macs, f.img_s), gflop_s(macs, e.img_s)
    return BenchResult(
        variant=spec.name, batch=batch, device=str(device), repeats=repeats,
        eager_ms_img=e.ms_img, fast_ms_img=f.ms_img, eager_img_s=e.img_s, fast_img_s=f.img_s,
        speedup=f.img_s / e.img_s, macs=macs,
        gflops_s=fast_rate, eager_gflops_s=eager_rate,
        fast_executed_gflops_s=gflop_s(fast_conv_macs, f.img_s),
        roofline_gflops_s=roofline_gflops_s,
        roofline_fraction=fast_rate / roofline_gflops_s,
        eager_roofline_fraction=eager_rate / roofline_gflops_s,
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict:
    """What a reader needs to compare two runs: hardware, threads, versions, load."""
    info = {
        "device": device,
        "cpu": _cpu_model(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        # Other processes' load makes timings noisy: recorded so a reader can judge.
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
