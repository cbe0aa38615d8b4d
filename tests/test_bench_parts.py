"""The parts of cnp.bench that `cnp bench` reports through: each against what it must equal
by definition (the clock, the kernel of /proc, a closed form), not against a timing."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from types import SimpleNamespace

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


@pytest.fixture
def fake_clock(monkeypatch):
    """bench.time_interleaved replaced: it runs each callable once and reports the seconds a
    test gives (`seconds[name]`, else 0.1 s); `asked` keeps each call's options, `ran` what
    the callables returned."""
    clock = SimpleNamespace(asked=[], ran=[], seconds={})

    def timed(calls, batch, repeats, warmup=2, device="cpu"):
        clock.asked.append({"batch": batch, "repeats": repeats, "warmup": warmup,
                            "device": device})
        clock.ran.append({name: call() for name, call in calls.items()})
        return {name: bench.Timing(clock.seconds.get(name, (0.1,)), batch) for name in calls}

    monkeypatch.setattr(bench, "time_interleaved", timed)
    return clock


def test_matmul_roofline_is_two_n_cubed_flops_over_the_median(fake_clock):
    """An n×n×n product is 2n³ FLOPs; the rate divides them by the median time of one."""
    fake_clock.seconds["mm"] = (0.5, 0.25, 1.0)
    assert bench.matmul_roofline(size=64) == 2 * 64**3 / 0.5 / 1e9
    (run,) = fake_clock.ran
    assert run["mm"].shape == (64, 64) and run["mm"].abs().sum() > 0


def test_the_roofline_times_the_same_product_on_the_device_asked_for(fake_clock, monkeypatch):
    """Seeded matrices: every run (and every machine) times the same product, both of its
    operands on the device asked for (torch multiplies a meta matrix by a CPU one)."""
    operands, mm = [], torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b: operands.append((a.device.type,
                                                                    b.device.type)) or mm(a, b))
    bench.matmul_roofline(size=16)
    bench.matmul_roofline(size=16)
    bench.matmul_roofline(size=16, device="meta")
    first, second, on_meta = (run["mm"] for run in fake_clock.ran)
    assert torch.equal(first, second) and on_meta.device.type == "meta"
    assert [asked["device"] for asked in fake_clock.asked] == ["cpu", "cpu", "meta"]
    assert operands == [("cpu", "cpu"), ("cpu", "cpu"), ("meta", "meta")]


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


def test_a_cpu_name_with_a_colon_is_read_whole(monkeypatch):
    import io

    cpuinfo = "processor\t: 0\nmodel name\t: Vendor CPU: 2.0GHz: rev 3\nflags\t: fpu\n"
    monkeypatch.setattr(bench, "open", lambda *a, **k: io.StringIO(cpuinfo), raising=False)
    assert bench.machine_info()["cpu"] == "Vendor CPU: 2.0GHz: rev 3"
    assert bench.machine_info()["device"] == "cpu"  # the default


def test_cpu_count_is_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert bench.machine_info()["cpu_count"] == 1
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS, Windows: every core
    assert bench.machine_info()["cpu_count"] == 64


def test_without_a_load_average_none_is_recorded(monkeypatch):
    monkeypatch.delattr(os, "getloadavg", raising=False)
    assert bench.machine_info()["load_average_1min"] is None


def test_a_cuda_device_records_its_gpu_and_is_synchronized(monkeypatch):
    """Timings on a GPU wait for its queue before and after each call (no GPU here: torch's
    CUDA calls are stand-ins that record what they were asked)."""
    synchronized = []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"GPU of {device}")
    monkeypatch.setattr(torch.cuda, "synchronize", synchronized.append)
    assert bench.machine_info("cuda:1")["gpu"] == "GPU of cuda:1"
    bench.time_interleaved({"a": lambda: None}, batch=1, repeats=2, warmup=0, device="cuda:1")
    assert synchronized == [torch.device("cuda", 1)] * 4
    bench.time_interleaved({"a": lambda: None}, batch=1, repeats=2, warmup=0, device="cpu")
    assert len(synchronized) == 4


def test_machine_info_without_proc_names_the_processor(monkeypatch):
    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(bench, "open", no_proc, raising=False)
    assert bench.machine_info()["cpu"] == (platform.processor() or platform.machine())


@pytest.mark.parametrize("variant", ["xs", "m"])
def test_each_backend_counts_the_conv_macs_it_executes(variant):
    """The eager model executes the spec's conv MACs. The fast path's last head layer
    upsamples after final_layer, not before: where that layer upsamples (M: 3UP), its
    final_layer runs on a quarter of the pixels; where it does not (XS: 2UP), no fewer."""
    spec = VARIANTS[variant]
    eager = build(spec)
    backends = {name: bench.make_backend(name, eager) for name in ("eager", "fast-torch")}
    conv_macs = summarize(spec).macs.conv_weights
    joints, side = spec.joint_num * spec.depth_dim, spec.heatmap_size
    saved = 3 * joints * spec.head[-1].out_channels * side[0] * side[1] // 4
    assert backends["eager"].executed_macs == conv_macs
    assert backends["fast-torch"].executed_macs == conv_macs - (
        saved if spec.head_upsample[-1] > 1 else 0)
    assert all(0 <= b.setup_s < 60 for b in backends.values())
    assert [b.engine for b in backends.values()] == ["torch", "torch"]


def test_bench_variant_reports_the_timings_it_took(fake_clock, monkeypatch):
    """With timings given (a fake clock), every reported figure is their closed form."""
    fake_clock.seconds.update({"eager": (0.4, 0.2, 0.8), "fast-torch": (0.2, 0.1, 0.4)})
    monkeypatch.setattr(bench, "matmul_roofline", lambda device="cpu": 100.0)
    result = bench.bench_variant("xs", backends=("eager", "fast-torch"), batch=2, repeats=3,
                                 warmup=0)
    spec = VARIANTS["xs"]
    assert fake_clock.asked == [{"batch": 2, "repeats": 3, "warmup": 0, "device": "cpu"}]
    assert all(out.shape == (2, spec.joint_num, 3) for out in fake_clock.ran[0].values())
    macs = summarize(spec).macs.total
    assert (result.variant, result.batch, result.device, result.repeats, result.macs,
            result.roofline_gflops_s) == ("xs", 2, "cpu", 3, macs, 100.0)
    eager = result.backends["eager"]
    assert eager.ms_runs == (200.0, 100.0, 400.0) and eager.ms_img == 200.0
    assert (eager.img_s, eager.gflops_s) == (5.0, bench.gflop_s(macs, 5.0))
    assert eager.executed_gflops_s == bench.gflop_s(summarize(spec).macs.conv_weights, 5.0)
    assert eager.roofline_fraction == eager.gflops_s / 100.0
    assert (eager.speedup_over, result.backends["fast-torch"].speedup_over) == (
        {"fast-torch": 0.5}, {"eager": 2.0})
    bench.bench_variant("xs", backends=("eager",))
    defaults = fake_clock.asked[-1]
    assert (defaults["batch"], defaults["device"]) == (1, "cpu")  # batch 1, the CPU


def test_bench_variant_runs_and_times_on_the_device_asked_for(fake_clock, monkeypatch):
    """On "meta" (nothing computed): the model, image, roofline and clock all get the device."""
    roofline_asked = []
    monkeypatch.setattr(bench, "matmul_roofline",
                        lambda device="cpu": roofline_asked.append(device) or 1.0)
    result = bench.bench_variant("xs", backends=("eager",), device="meta")
    assert [asked["device"] for asked in fake_clock.asked] == ["meta"]
    assert roofline_asked == ["meta"] and result.device == "meta"
    assert [out.device.type for out in fake_clock.ran[0].values()] == ["meta"]


def test_a_given_roofline_is_not_measured_again(monkeypatch):
    monkeypatch.setattr(bench, "matmul_roofline", lambda device="cpu": pytest.fail("measured"))
    result = bench.bench_variant("xs", backends=("eager",), repeats=1, warmup=0,
                                 roofline_gflops_s=50.0)
    assert result.roofline_gflops_s == 50.0


def test_the_onnxruntime_backend_runs_the_plain_export_for_its_coordinates(monkeypatch):
    """Of the plain export's two outputs (heatmaps, coords), the backend returns coords."""
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from cnp import export

    def two_outputs(model, **kwargs):  # heatmaps: the image; coords: minus the image
        values = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3, 2, 2])
                  for name in ("image", "heatmaps", "coords")]
        nodes = [helper.make_node("Identity", ["image"], ["heatmaps"]),
                 helper.make_node("Neg", ["image"], ["coords"])]
        return helper.make_model(helper.make_graph(nodes, "g", values[:1], values[1:]),
                                 opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    monkeypatch.setattr(export, "to_onnx", two_outputs)
    # M: its fast rewrite runs fewer MACs than its own graph (see the test above)
    backend = bench.make_backend("onnxruntime", build(VARIANTS["m"], device="meta"))
    image = torch.rand(1, 3, 2, 2)
    assert torch.equal(backend.run(image), -image)
    assert (backend.name, backend.engine) == ("onnxruntime", "onnxruntime")
    # the model's own graph: every convolution of the spec runs
    assert backend.executed_macs == summarize(VARIANTS["m"]).macs.conv_weights
