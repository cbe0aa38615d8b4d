"""`cnp bench`: eager vs fast throughput table, JSON, plot, and its usage errors."""

import contextlib
import io
import json
import subprocess
import sys

import pytest

from cnp import bench
from cnp.bench import BenchResult
from cnp.cli import main
from cnp.specs import VARIANTS

QUICK = ["--repeats", "1", "--warmup", "0"]  # correctness of the report, not a timing


@pytest.fixture(scope="module")
def xs_report():
    """One quick `cnp bench xs --json` run shared by the tests that read its output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["bench", "xs", "--json", *QUICK])
    return code, json.loads(out.getvalue()), err.getvalue()


def test_bench_json_reports_eager_and_fast_throughput_for_xs(xs_report):
    code, report, _ = xs_report
    assert code == 0
    (row,) = report["results"]
    assert row["variant"] == "xs" and row["batch"] == 1
    for key in ("eager_img_s", "fast_img_s", "gflops_s", "roofline_fraction"):
        assert row[key] > 0, key
    assert row["speedup"] == pytest.approx(row["fast_img_s"] / row["eager_img_s"])
    assert row["eager_ms_img"] == pytest.approx(1e3 / row["eager_img_s"])
    # GFLOP/s is 2 FLOPs per MAC of the analysis' count, over the measured time.
    assert row["gflops_s"] == pytest.approx(2 * row["macs"] * row["fast_img_s"] / 1e9)
    assert row["roofline_fraction"] == pytest.approx(row["gflops_s"] / row["roofline_gflops_s"])


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
    measured = BenchResult(**row)
    monkeypatch.setattr(bench, "matmul_roofline", lambda **_: row["roofline_gflops_s"])
    monkeypatch.setattr(bench, "bench_variant", lambda *_, **__: measured)
    return row


def test_bench_table_shows_speedup_gflops_and_roofline(replay_xs, capsys):
    assert main(["bench", "xs"]) == 0
    header, line = capsys.readouterr().out.splitlines()[:2]
    for column in ("eager img/s", "fast img/s", "speed-up", "GFLOP/s fast", "roofline fast"):
        assert column in header
    assert line.split()[:5] == ["xs", "1", f"{replay_xs['eager_img_s']:.1f}",
                                f"{replay_xs['fast_img_s']:.1f}", f"{replay_xs['speedup']:.2f}x"]


def test_bench_unknown_variant_is_one_line_exit_2():
    result = subprocess.run([sys.executable, "-m", "cnp.cli", "bench", "xs", "nope"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"cnp: error: unknown variant 'nope'; known variants: {', '.join(VARIANTS)}"]
    assert result.stdout == ""


@pytest.mark.parametrize("argument", ["--batch=0", "--repeats=-1", "--warmup=x"])
def test_bench_rejects_bad_counts(argument, capsys):
    assert main(["bench", "xs", argument]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_plot_without_matplotlib_is_one_line_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    assert main(["bench", "xs", "--plot", str(tmp_path / "p.png"), *QUICK]) == 2
    assert capsys.readouterr().err == (
        "cnp: error: --plot needs matplotlib, an optional extra: pip install 'cnp[plot]'\n")
    assert not (tmp_path / "p.png").exists()


def test_plot_refuses_to_overwrite_without_force(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib (extra 'plot') is not installed")
    target = tmp_path / "p.png"
    target.write_bytes(b"keep me")
    assert main(["bench", "xs", "--plot", str(target), *QUICK]) == 2
    assert "file exists; pass --force" in capsys.readouterr().err
    assert target.read_bytes() == b"keep me"


def test_plot_draws_a_png(replay_xs, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (extra 'plot') is not installed")
    target = tmp_path / "p.png"
    assert main(["bench", "xs", "--plot", str(target)]) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
