"""`cnp bench`: backends side by side (table, JSON), plot, and its usage errors."""

import importlib.util
import json
import statistics
import sys
from types import SimpleNamespace

import pytest
import torch

from cnp import bench
from cnp.specs import VARIANTS
from scopes import module_unless_mutating
from spec_page import PAPER_PAGE

QUICK = ["--repeats", "3", "--warmup", "0"]  # correctness of the report, not a timing (3:
# a median of round-by-round ratios differs from the ratio of medians)
ONNX_EXTRA = all(importlib.util.find_spec(name) for name in bench.NEEDS["onnxruntime"])
# Every backend this environment has: the one bench run below covers them all.
BACKENDS = ("eager", "fast", "fast-torch") + (("onnxruntime",) if ONNX_EXTRA else ())
ENGINES = {"eager": "torch", "fast": "onnxruntime" if ONNX_EXTRA else "torch",
           "fast-torch": "torch", "onnxruntime": "onnxruntime"}


def quick_export(model, **_):
    """A stand-in for cnp.export.to_onnx: an ONNX graph of the same function (cnp.fast_ort's,
    milliseconds) instead of torch's exporter (5-20 s here). The export itself is
    tests/test_onnx.py's; here it is the bench's plumbing (session, inputs, outputs)."""
    from cnp.fast import FastConvNeXtPose
    from cnp.fast_ort import to_onnx

    return to_onnx(FastConvNeXtPose(model))


@pytest.fixture(scope=module_unless_mutating)
def xs_report(cli):
    """One quick `cnp bench xs --backend ... --json` run shared by the tests that read it
    (on one thread, as every correctness run: see conftest._one_thread_unless_timing)."""
    with pytest.MonkeyPatch.context() as patch:
        if ONNX_EXTRA:
            import cnp.export

            patch.setattr(cnp.export, "to_onnx", quick_export)
        result = cli("bench", "xs", "--backend", ",".join(BACKENDS), "--json", *QUICK)
    return result.code, json.loads(result.out), result.err


def test_bench_json_reports_every_backend_for_xs(xs_report):
    code, report, _ = xs_report
    assert code == 0
    (row,) = report["results"]
    assert row["variant"] == "xs" and row["batch"] == 1
    assert list(row["backends"]) == list(BACKENDS)
    for name, result in row["backends"].items():
        assert result["engine"] == ENGINES[name], name
        for key in ("ms_img", "img_s", "gflops_s", "roofline_fraction"):
            assert result[key] > 0, (name, key)
        assert result["ms_img"] == pytest.approx(1e3 / result["img_s"])


def test_bench_ratios_pair_the_backends_times_round_by_round(xs_report):
    backends = xs_report[1]["results"][0]["backends"]
    for name, result in backends.items():
        assert set(result["speedup_over"]) == set(backends) - {name}
        assert result["ms_img"] == pytest.approx(statistics.median(result["ms_runs"]))
        for other, ratio in result["speedup_over"].items():
            per_round = [a / b for a, b in zip(backends[other]["ms_runs"], result["ms_runs"])]
            assert ratio == pytest.approx(statistics.median(per_round))


def test_bench_rates_rest_on_the_measured_times(xs_report):
    (row,) = xs_report[1]["results"]
    for result in row["backends"].values():
        # GFLOP/s is 2 FLOPs per MAC of the analysis' count, over the measured time.
        assert result["gflops_s"] == pytest.approx(2 * row["macs"] * result["img_s"] / 1e9)
        assert result["roofline_fraction"] == pytest.approx(
            result["gflops_s"] / row["roofline_gflops_s"])


def test_bench_counts_the_papers_macs(xs_report):
    # GFLOP/s rest on the model's MACs per image: the paper's GFLOPs, within 1%.
    (row,) = xs_report[1]["results"]
    assert row["macs"] / 1e9 == pytest.approx(PAPER_PAGE["xs"]["gflops"], rel=0.01)


def test_bench_json_records_the_machine(xs_report):
    machine = xs_report[1]["machine"]
    assert machine["torch_threads"] >= 1 and machine["device"] == "cpu"
    assert {"cpu", "cpu_count", "torch", "load_average_1min"} <= machine.keys()


def test_bench_reports_progress_on_stderr(xs_report):
    assert "cnp bench [2/2] xs batch 1" in xs_report[2]


@pytest.fixture
def replay_xs(xs_report, monkeypatch):
    """Re-serve the fixture's measurement: the tests below check presentation, not timing."""
    (row,) = xs_report[1]["results"]
    monkeypatch.setattr(bench, "matmul_roofline", lambda **_: row["roofline_gflops_s"])
    monkeypatch.setattr(bench, "bench_variant",
                        lambda *_, **__: SimpleNamespace(to_dict=lambda: row))
    return row


def test_bench_table_shows_one_line_per_backend_with_its_ratios(replay_xs, cli):
    result = cli("bench", "xs", "--backend", ",".join(BACKENDS))
    assert result.code == 0
    header, *lines = result.out.splitlines()[:1 + len(BACKENDS)]
    assert header.split() == ["variant", "batch", "backend", "engine", "ms/img", "img/s",
                              "GFLOP/s", "roofline", "setup", "s"] + [
        word for name in BACKENDS for word in ("vs", name)]
    for name, line in zip(BACKENDS, lines):
        measured = replay_xs["backends"][name]
        ratios = [f"{measured['speedup_over'][other]:.2f}x" if other != name else "-"
                  for other in BACKENDS]
        assert line.split() == ["xs", "1", name, ENGINES[name], f"{measured['ms_img']:.1f}",
                                f"{measured['img_s']:.1f}", f"{measured['gflops_s']:.1f}",
                                f"{measured['roofline_fraction']:.0%}",
                                f"{measured['setup_s']:.2f}"] + ratios


def test_bench_table_notes_say_how_it_was_measured(replay_xs, cli):
    from cnp.analysis import MAC_CONVENTION

    notes = cli("bench", "xs", "--backend", ",".join(BACKENDS)).out.split("\n\n", 1)[1]
    assert f"{replay_xs['repeats']} interleaved runs" in notes
    assert f"{torch.get_num_threads()} torch threads" in notes
    assert f"{replay_xs['roofline_gflops_s']:.1f} GFLOP/s" in notes
    assert MAC_CONVENTION in notes
    assert f"cpu {bench.machine_info('cpu')['cpu']}" in notes  # the device, the processor


def test_bench_unknown_backend_is_one_line_exit_2(cli):
    result = cli("bench", "xs", "--backend", "eager,tvm")
    assert (result.code, result.out) == (2, "")
    assert result.err.splitlines() == [
        "cnp: error: --backend tvm: unknown backend; known backends: eager, fast, fast-torch, "
        "onnxruntime"]


def test_bench_backend_not_installed_is_one_line_exit_2(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    result = cli("bench", "xs", "--backend", "eager,onnxruntime")
    assert (result.code, result.out) == (2, "")
    assert result.err.splitlines() == [
        "cnp: error: onnxruntime: not installed; ONNX support needs the 'onnx' extra: "
        "pip install 'cnp[onnx]'"]


def test_bench_backend_named_twice_is_one_line_exit_2(cli):
    result = cli("bench", "xs", "--backend", "fast,eager,fast")
    assert result.code == 2 and result.err.count("\n") == 1
    assert "fast,eager,fast" in result.err and "twice" in result.err


def test_bench_on_a_device_torch_does_not_see_is_one_line_exit_2(cli, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = cli("bench", "xs", "--device", "cuda", "--backend", "eager")
    assert (result.code, result.out) == (2, "")
    assert result.err.count("\n") == 1 and "--device cuda" in result.err


@pytest.mark.parametrize("backends", ["onnxruntime", "eager,onnxruntime"])
def test_bench_refuses_onnxruntime_off_the_cpu(backends, cli, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # checked before any timing
    result = cli("bench", "xs", "--device", "cuda", "--backend", backends)
    assert result.code == 2 and result.err.count("\n") == 1
    assert "onnxruntime" in result.err and "cuda" in result.err


def test_bench_off_the_cpu_without_onnxruntime_is_not_refused_for_it(cli, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench, "machine_info", lambda device: (_ for _ in ()).throw(
        RuntimeError("past the checks")))
    with pytest.raises(RuntimeError, match="past the checks"):
        cli("bench", "xs", "--device", "cuda", "--backend", "eager,fast")


@pytest.mark.slow
def test_bench_usage_error_from_the_module_entry_point_is_one_line(cli_process):
    # `python -m cnp.cli` runs cli.py as __main__; the command's UsageError must still be
    # caught (it once escaped as a traceback there).
    result = cli_process("bench", "xs", "--backend", "fast,fast")
    assert result.code == 2
    assert result.err.startswith("cnp: error: ") and result.err.count("\n") == 1


@pytest.fixture
def measured(replay_xs, monkeypatch):
    """What `cnp bench` asks of the measurement: the options of the roofline ("roofline")
    and of each variant (by name), which replay the fixture's row (roofline 123 GFLOP/s)."""
    calls = {}

    def roofline(**options):
        calls["roofline"] = options
        return 123.0

    def measure(variant, **options):
        calls[variant] = options
        return SimpleNamespace(to_dict=lambda: replay_xs)

    monkeypatch.setattr(bench, "matmul_roofline", roofline)
    monkeypatch.setattr(bench, "bench_variant", measure)
    return calls


def test_bench_passes_every_option_to_the_measurement(measured, cli):
    argv = ["--backend", "eager,fast", "--batch", "2", "--repeats", "2", "--warmup", "1"]
    assert cli("bench", "xs", *argv).code == 0
    assert measured["roofline"] == {"repeats": 3, "device": "cpu"}  # at least 3 timed runs
    assert measured["xs"] == {"backends": ("eager", "fast"), "batch": 2, "repeats": 2,
                              "warmup": 1, "device": "cpu", "roofline_gflops_s": 123.0}


def test_bench_defaults_are_the_documented_ones(measured, cli, monkeypatch):
    """`cnp bench xs` alone: eager and fast, batch 1, 10 timed runs after 2 untimed ones, on
    the CPU, torch's threads left as they are (its help says so)."""
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    assert cli("bench", "xs").code == 0
    assert measured["roofline"] == {"repeats": 10, "device": "cpu"}
    assert measured["xs"] == {"backends": ("eager", "fast"), "batch": 1, "repeats": 10,
                              "warmup": 2, "device": "cpu", "roofline_gflops_s": 123.0}
    assert threads == []


def test_bench_device_is_cpu_or_cuda(replay_xs, cli):
    assert cli("bench", "xs", "--backend", "eager", "--device", "cpu").code == 0
    refused = cli("bench", "xs", "--device", "tpu")
    assert refused.code == 2 and refused.err.count("\n") == 1
    assert "--device" in refused.err and "'tpu'" in refused.err


def test_bench_json_has_the_results_and_the_machine(replay_xs, cli):
    report = json.loads(cli("bench", "xs", "--backend", "eager", "--json").out)
    assert set(report) == {"results", "machine"}
    assert report["results"] == [replay_xs] and report["machine"]["device"] == "cpu"


def test_bench_runs_every_variant_by_default(replay_xs, cli):
    result = cli("bench", "--backend", "eager")
    assert result.code == 0
    total = len(VARIANTS) + 1  # the roofline, then one step per variant
    for step, name in enumerate(VARIANTS, start=2):
        assert f"[{step}/{total}] {name} batch 1" in result.err


def test_bench_threads_sets_torchs_threads(replay_xs, cli, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)  # the session's stay as they are
    assert cli("bench", "xs", "--backend", "eager", "--threads", "3").code == 0
    assert calls == [3]


def test_bench_progress_on_a_terminal_rewrites_one_line(replay_xs):
    import contextlib
    import io

    from cnp.cli import main

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    with contextlib.redirect_stderr(terminal), contextlib.redirect_stdout(io.StringIO()):
        assert main(["bench", "xs", "--backend", "eager"]) == 0
    text = terminal.getvalue()
    # Each step returns to the line's start and clears it; one newline, after the last.
    assert text.count("\r\033[K") == 2 and text.count("\n") == 1 and text.endswith("\n")
    assert "[1/2]" in text and "[2/2] xs batch 1" in text


def test_bench_progress_in_a_log_is_one_line_per_step(xs_report):
    lines = [line for line in xs_report[2].splitlines() if line.startswith("cnp bench [")]
    assert [line.split("]")[0] for line in lines] == ["cnp bench [1/2", "cnp bench [2/2"]
    assert "roofline" in lines[0] and "cpu" in lines[0]  # step 1 measures the roofline
    assert "\r" not in xs_report[2]


def test_plot_needs_eager_and_fast(tmp_path, cli):
    result = cli("bench", "xs", "--backend", "fast,onnxruntime", "--plot", tmp_path / "p.png")
    assert result.code == 2 and result.err.count("\n") == 1
    assert all(word in result.err for word in ("--plot", "eager", "fast"))
    assert not (tmp_path / "p.png").exists()


def test_without_plot_any_backends_may_be_timed(replay_xs, cli):
    assert cli("bench", "xs", "--backend", "fast").code == 0


def test_plot_file_name_must_say_its_format(tmp_path, cli):
    pytest.importorskip("matplotlib", reason="matplotlib (extra 'plot') is not installed")
    result = cli("bench", "xs", "--plot", tmp_path / "p.txt", *QUICK)
    assert result.code == 2 and result.err.count("\n") == 1
    assert str(tmp_path / "p.txt") in result.err
    assert all(suffix in result.err for suffix in (".png", ".svg", ".pdf"))


def test_plot_into_a_missing_folder_names_it(tmp_path, cli):
    pytest.importorskip("matplotlib", reason="matplotlib (extra 'plot') is not installed")
    result = cli("bench", "xs", "--plot", tmp_path / "none" / "p.png", *QUICK)
    assert result.code == 2 and result.err.count("\n") == 1
    assert str(tmp_path / "none") in result.err and not (tmp_path / "none").exists()


def test_bench_unknown_variant_is_one_line_exit_2(cli):
    result = cli("bench", "xs", "nope")
    assert result.code == 2
    assert result.err.splitlines() == [
        f"cnp: error: unknown variant 'nope'; known variants: {', '.join(VARIANTS)}"]
    assert result.out == ""


@pytest.mark.parametrize("argument", ["--batch=0", "--repeats=-1", "--warmup=x"])
def test_bench_rejects_bad_counts(argument, cli):
    result = cli("bench", "xs", argument)
    assert result.code == 2
    assert result.err.count("\n") == 1


def test_plot_without_matplotlib_is_one_line_exit_2(monkeypatch, tmp_path, cli):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    result = cli("bench", "xs", "--plot", tmp_path / "p.png", *QUICK)
    assert result.code == 2
    assert result.err == (
        "cnp: error: --plot needs matplotlib, an optional extra: pip install 'cnp[plot]'\n")
    assert not (tmp_path / "p.png").exists()


def test_plot_refuses_to_overwrite_without_force(tmp_path, cli):
    pytest.importorskip("matplotlib", reason="matplotlib (extra 'plot') is not installed")
    target = tmp_path / "p.png"
    target.write_bytes(b"keep me")
    result = cli("bench", "xs", "--plot", target, *QUICK)
    assert result.code == 2
    assert "file exists; pass --force" in result.err
    assert target.read_bytes() == b"keep me"


def test_plot_overwrites_with_force(replay_xs, tmp_path, cli):
    pytest.importorskip("matplotlib", reason="matplotlib (extra 'plot') is not installed")
    target = tmp_path / "p.png"
    target.write_bytes(b"old")
    assert cli("bench", "xs", "--plot", target, "--force").code == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_draws_a_png(replay_xs, tmp_path, cli):
    pytest.importorskip("matplotlib", reason="matplotlib (extra 'plot') is not installed")
    target = tmp_path / "p.png"
    result = cli("bench", "xs", "--plot", target)
    assert result.code == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Which file was written goes to stderr, beside the progress; stdout keeps the table.
    assert str(target) in result.err.splitlines()[-1] and str(target) not in result.out
