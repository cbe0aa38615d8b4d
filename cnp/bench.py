"""Throughput of inference backends, with the context that makes a figure readable.

Backends (BACKENDS): `eager` (cnp.build), `fast` (cnp.fast.fast_model with its default
engine: ONNX Runtime on the CPU when the `onnx` extra is installed, torch otherwise),
`fast-torch` (the same rewrite run by torch), and `onnxruntime`: the plain export
(cnp.export.to_onnx, coordinates included) in an ONNX Runtime session configured for a fair
comparison by cnp.export.session_options: every graph optimization, intra-op threads equal
to torch's, no spin-waiting (a spinning pool keeps the cores busy after its run ends,
which would slow whichever backend runs next in the interleaved loop).

Every figure is a median over repeated runs after warm-up. The backends alternate, one
call each per round and each round in another order (see time_interleaved), so a burst of
load from another process, or from the backend that ran just before, hits all alike and
their ratios stay meaningful on a shared machine. Building a backend (exporting, creating a session) is
timed once, separately: `setup_s`, never part of a per-image figure.

Units (stated because both are common):
  GFLOP/s = 2 × MACs / seconds / 1e9, with MACs = `cnp.summarize(v).macs.total` per image
  (cnp's MAC convention, see cnp.analysis). One multiply-accumulate is two FLOPs.
  The fast path executes fewer MACs than the model nominally has (cnp.fast moves the
  last 1×1 conv in front of the last upsampling), so its GFLOP/s on the model's nominal
  MACs is an *effective* rate; `executed_gflops_s` counts the conv MACs it really runs.
Roofline: the median GFLOP/s of an fp32 `torch.mm` of ROOFLINE_SIZE² matrices, measured in
the same process, same threads, same device: what this machine reaches on the friendliest
dense kernel. roofline_fraction = GFLOP/s / that.
"""

from __future__ import annotations

import itertools
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from cnp.analysis import summarize
from cnp.fast import fast_model
from cnp.model import build
from cnp.specs import get_spec

ROUND_PAUSE_S = 0.1  # longer than libgomp's spin-wait after torch's last operator
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
    """Median-ready timings of each callable, each called once per round, `repeats` rounds
    after warm-up."""
    device = torch.device(device)
    for _ in range(warmup):
        for call in calls.values():
            call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    # Round r runs the backends in the r-th of their orders (permutations): within rounds
    # each backend follows each other one equally often over len(calls)! rounds, so a
    # backend slowed by what ran just before it (torch's OpenMP threads spin-wait for tens
    # of ms after its last operator, on a core the next backend wanted) slows all alike,
    # not one. A pause before each round makes the round's first backend follow idle
    # cores, not the previous round's last backend (which would unbalance the pairs).
    orders = list(itertools.permutations(calls))
    for round_ in range(repeats):
        if len(calls) > 1:
            time.sleep(ROUND_PAUSE_S)
        for name in orders[round_ % len(orders)]:
            call = calls[name]
            _synchronize(device)
            start = time.perf_counter()
            call()
            _synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(s), batch) for name, s in seconds.items()}


def paired_ratio(slower: Timing, faster: Timing) -> float:
    """Median over rounds of slower's time ÷ faster's time in the same round.

    The two ran within milliseconds of each other in each round, so a burst of load from
    another process divides out of each round's ratio; a ratio of the two medians would mix
    rounds taken under different loads."""
    return statistics.median(a / b for a, b in zip(slower.seconds, faster.seconds))


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
    """Conv weight MACs one image really costs in `model` (a model on `meta`: nothing is
    computed): for each convolution it runs, output elements × input channels per group ×
    kernel taps, as torch's FLOP counter would count (without importing torch._dynamo)."""
    macs = []

    def count(conv, _inputs, output):
        taps = conv.kernel_size[0] * conv.kernel_size[1]
        macs.append(output.numel() * conv.in_channels // conv.groups * taps)

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.inference_mode():
            model.heatmaps(torch.empty(1, 3, *input_size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return sum(macs)


BACKENDS = ("eager", "fast", "fast-torch", "onnxruntime")
NEEDS = {"onnxruntime": ("onnx", "onnxruntime", "onnxscript")}  # modules of the `onnx` extra


def require_backends(names) -> None:
    """InputError (one line, exit 2) for an unknown backend or one whose extra is missing."""
    from cnp.errors import InputError

    for name in names:
        if name not in BACKENDS:
            raise InputError(f"--backend {name}", f"unknown backend; known backends: "
                                                   f"{', '.join(BACKENDS)}")
        if NEEDS.get(name):
            from cnp.export import require

            require(*NEEDS[name])


@dataclass(frozen=True)
class Backend:
    """A ready-to-time way of turning images into coordinates."""

    name: str
    engine: str  # what executes it: "torch" or "onnxruntime"
    run: Callable[[torch.Tensor], torch.Tensor]
    setup_s: float  # seconds from the eager model to `run` (export, rewrite, session)
    executed_macs: int  # conv MACs per image it really executes


def _onnxruntime_plain(eager) -> Callable[[torch.Tensor], torch.Tensor]:
    from cnp.export import COORDS, INPUT, inference_session, to_onnx

    session = inference_session(to_onnx(eager).SerializeToString())
    return lambda image: torch.from_numpy(session.run([COORDS], {INPUT: image.numpy()})[0])


def make_backend(name: str, eager) -> Backend:
    """Backend `name` for the eager model `eager`; the eager model is not changed."""
    start = time.perf_counter()
    if name == "eager":
        run, engine = eager, "torch"
    elif name == "onnxruntime":
        run, engine = _onnxruntime_plain(eager), "onnxruntime"
    else:
        run = fast_model(eager, engine="torch" if name == "fast-torch" else None)
        engine = run.engine
    setup_s = time.perf_counter() - start
    if name in ("eager", "onnxruntime"):  # the model's own graph
        executed = summarize(eager.spec).macs.conv_weights
    else:
        rewritten = fast_model(build(eager.spec, device="meta"), engine="torch")
        executed = executed_conv_macs(rewritten, eager.spec.input_size)
    return Backend(name, engine, run, setup_s, executed)


@dataclass(frozen=True)
class BackendResult:
    engine: str
    ms_img: float
    img_s: float
    gflops_s: float  # on the model's nominal MACs (effective rate for the fast path)
    executed_gflops_s: float  # on the conv MACs this backend really executes
    roofline_fraction: float  # gflops_s / roofline_gflops_s
    setup_s: float
    # other backend → the median over rounds of its time ÷ this one's in the same round
    speedup_over: dict[str, float]
    ms_runs: tuple[float, ...]  # ms/img of each timed round, in round order


@dataclass(frozen=True)
class BenchResult:
    variant: str
    batch: int
    device: str
    repeats: int
    macs: int  # per image, cnp.summarize(v).macs.total
    roofline_gflops_s: float
    backends: dict[str, BackendResult]  # in the order they were asked for

    def to_dict(self) -> dict:
        return asdict(self)


def bench_variant(variant: str, backends=("eager", "fast"), batch: int = 1, repeats: int = 10,
                  warmup: int = 2, device: str = "cpu",
                  roofline_gflops_s: float | None = None) -> BenchResult:
    """Throughput of each backend for one variant at 3×H×W input (random weights: speed
    does not depend on their values), measured interleaved in this process."""
    spec = get_spec(variant)
    eager = build(spec, device=device)
    built = [make_backend(name, eager) for name in backends]
    image = torch.randn(batch, 3, *spec.input_size, device=device)
    if roofline_gflops_s is None:
        roofline_gflops_s = matmul_roofline(device=device)
    with torch.inference_mode():
        timings = time_interleaved({b.name: (lambda b=b: b.run(image)) for b in built},
                                   batch=batch, repeats=repeats, warmup=warmup, device=device)
    macs = summarize(spec).macs.total
    results = {}
    for b in built:
        timing = timings[b.name]
        rate = gflop_s(macs, timing.img_s)
        results[b.name] = BackendResult(
            engine=b.engine, ms_img=timing.ms_img, img_s=timing.img_s, gflops_s=rate,
            executed_gflops_s=gflop_s(b.executed_macs, timing.img_s),
            roofline_fraction=rate / roofline_gflops_s, setup_s=b.setup_s,
            speedup_over={other: paired_ratio(timings[other], timing)
                          for other in timings if other != b.name},
            ms_runs=tuple(1e3 * t / batch for t in timing.seconds))
    return BenchResult(variant=spec.name, batch=batch, device=str(device), repeats=repeats,
                       macs=macs, roofline_gflops_s=roofline_gflops_s, backends=results)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info(device: str = "cpu") -> dict:
    """What a reader needs to compare two runs: hardware, threads, versions, load."""
    info = {
        "device": device,
        "cpu": _cpu_model(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "python": platform.python_version(),
        # libgomp reads it at start-up: unset, torch's idle threads spin before sleeping.
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        # Other processes' load makes timings noisy: recorded so a reader can judge.
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
