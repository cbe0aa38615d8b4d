"""`cnp bench`: eager vs fast throughput table, JSON, plot, and its usage errors."""

import json
import sys

import pytest

from cnp import bench
from cnp.bench import BenchResult
from cnp.specs import VARIANTS
from spec_page import PAPER_PAGE

QUICK = ["--repeats", "1", "--warmup", "0"]  # correctness of the report, not a timing


@pytest.fixture(scope="module")
def xs_report(cli):
    """One quick `cnp bench xs --json` run shared by the tests that read its output."""
    result = cli("bench", "xs", "--json", *QUICK)
    return result.code, json.loads(result.out), result.err


def test_bench_json_reports_eager_and_fast_throughput_for_xs(xs_report):
    code, report, _ = xs_report
    assert code == 0
    (row,) = report["results"]
    assert row["variant"] == "xs" and row["batch"] == 1
    for key in ("eager_img_s", "fast_img_s", "gflops_s", "roofline_fraction"):
        assert row[key] > 0, key


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
    measured = BenchResult(**row)
    monkeypatch.setattr(bench, "matmul_roofline", lambda **_: row["roofline_gflops_s"])
    monkeypatch.setattr(bench, "bench_variant", lambda *_, **__: measured)
    return row


def test_bench_table_shows_speedup_gflops_and_roofline(replay_xs, cli):
    result = cli("bench", "xs")
    assert result.code == 0
    header, line = result.out.splitlines()[:2]
    for column in ("eager img/s", "fast img/s", "speed-up", "GFLOP/s fast", "roofline fast"):
        assert column in header
    assert line.split()[:5] == ["xs", "1", f"{replay_xs['eager_img_s']:.1f}",
                                f"{replay_xs['fast_img_s']:.1f}", f"{replay_xs['speedup']:.2f}x"]


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


def test_plot_draws_a_png(replay_xs, tmp_path, cli):
    pytest.importorskip("matplotlib", reason="matplotlib (extra 'plot') is not installed")
    target = tmp_path / "p.png"
    assert cli("bench", "xs", "--plot", target).code == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
