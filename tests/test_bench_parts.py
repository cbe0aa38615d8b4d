"""The parts of cnp.bench that `cnp bench` reports through: each against what it must equal
by definition (the clock, the kernel of /proc, a closed form), not against a timing."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata

import pytest
import torch

from cnp import bench
from cnp.analysis import summarize
from cnp.model import build
from cnp.specs import VARIANTS


def installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def test_gflop_s_counts_a_mac_as_two_flops():
    assert bench.gflop_s(10**9, 3.0) == 6.0


def test_matmul_roofline_is_two_n_cubed_flops_over_the_median(monkeypatch):
    """An n×n×n product is 2n³ FLOPs; the rate divides them by the median time of one."""
    ran = []

    def timed(calls, batch, repeats, warmup=2, device="cpu"):
        ran.append(calls["mm"]())
        return {"mm": bench.Timing((0.5, 0.25, 1.0), batch)}

    monkeypatch.setattr(bench, "time_interleaved", timed)
    assert bench.matmul_roofline(size=64) == 2 * 64**3 / 0.5 / 1e9
    (product,) = ran
    assert product.shape == (64, 64) and product.abs().sum() > 0


def test_time_interleaved_measures_each_call_by_the_clock():
    timings = bench.time_interleaved({"nap": lambda: bench.time.sleep(0.01)}, batch=4,
                                     repeats=3, warmup=0)
    assert len(timings["nap"].seconds) == 3
    assert all(0.01 <= s < 1.0 for s in timings["nap"].seconds)
    assert timings["nap"].batch == 4


@pytest.mark.parametrize("backends, pauses", [(1, 0), (2, 3)])
def test_time_interleaved_pauses_before_each_round_of_several(backends, pauses, monkeypatch):
    """A round of several backends starts after idle cores (the pause), so its first backend
    does not follow the previous round's last one; one backend needs no pause."""
    slept = []
    monkeypatch.setattr(bench.time, "sleep", slept.append)
    calls = {f"b{i}": (lambda: None) for i in range(backends)}
    bench.time_interleaved(calls, batch=1, repeats=3, warmup=0)
    assert slept == [bench.ROUND_PAUSE_S] * pauses


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_executed_conv_macs_of_the_eager_model_are_its_conv_macs(variant):
    """Hooks on each convolution of one image agree with the FLOP counter's conv MACs."""
    spec = VARIANTS[variant]
    model = build(spec, device="meta")
    assert bench.executed_conv_macs(model, spec.input_size) == summarize(spec).macs.conv_weights


def test_machine_info_reads_this_machine(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 2.5, 3.5))
    info = bench.machine_info("cpu")
    with open("/proc/cpuinfo") as cpuinfo:
        names = re.findall(r"^model name\s*:\s*(.*?)\s*$", cpuinfo.read(), re.MULTILINE)
    assert info["cpu"] == (names[0] if names else platform.processor() or platform.machine())
    assert info["cpu_count"] == len(os.sched_getaffinity(0))
    assert (info["python"], info["torch"]) == (platform.python_version(), torch.__version__)
    assert info["onnxruntime"] == installed("onnxruntime")
    assert (info["omp_wait_policy"], info["load_average_1min"]) == ("PASSIVE", 1.5)
    assert info["device"] == "cpu" and "gpu" not in info


def test_machine_info_without_proc_names_the_processor(monkeypatch):
    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(bench, "open", no_proc, raising=False)
    assert bench.machine_info()["cpu"] == (platform.processor() or platform.machine())
