"""`cnp table` and `cnp summary`: output, JSON fields and exit codes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from cnp import VARIANTS, cli, specs

JSON_FIELDS = {"variant", "backbone", "depths", "dims", "head_channels", "head_upsample",
               "depth_dim", "heatmap_shape", "params", "state_dict_numel", "state_dict_keys",
               "gmacs", "paper"}
# The spec page's table, written out independently of cnp/specs.py.
SPEC_PAGE = {
    "xs": ("Atto", [128] * 3, [2, 2, 1], 32, [576, 32, 32]),
    "s": ("Femto-L", [256] * 3, [2, 2, 1], 32, [576, 32, 32]),
    "m": ("Femto-L", [256] * 3, [2, 2, 2], 64, [1152, 64, 64]),
    "l": ("Femto-L", [512] * 3, [2, 2, 2], 64, [1152, 64, 64]),
}


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def table_json():
    # One in-process run serves every per-variant check below.
    import contextlib
    import io
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(["table", "--json"])
    return code, {row["variant"]: row for row in json.loads(buffer.getvalue())}


def test_table_matches_and_exits_zero(capsys):
    code, out, err = run(capsys, "table")
    assert code == 0, out
    assert "all 35 compared cells match" in out
    assert err == ""


def test_table_shows_every_variant_beside_the_paper(capsys):
    _, out, _ = run(capsys, "table")
    rows = {line.split()[0]: line for line in out.splitlines()
            if line.split(" ", 1)[0] in VARIANTS}
    assert set(rows) == set(VARIANTS)
    assert "7.44 (7.44) ok" in rows["s"] and "7.45 (7.45) ok" in rows["s"]
    assert "0.82," in rows["xs"] and "56.61" in rows["xs"]


def test_table_json_is_one_object_per_variant(table_json):
    code, rows = table_json
    assert code == 0
    assert list(rows) == list(VARIANTS)
    for row in rows.values():
        assert JSON_FIELDS <= set(row)
        assert {"params_m", "gflops", "mpjpe"} <= set(row["paper"])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_table_json_row(variant, table_json):
    row = table_json[1][variant]
    backbone, head, upsample, depth_dim, heatmap = SPEC_PAGE[variant]
    assert (row["backbone"], row["head_channels"], row["head_upsample"], row["depth_dim"],
            row["heatmap_shape"]) == (backbone, head, upsample, depth_dim, heatmap)
    assert row["ok"] and all(check["ok"] for check in row["checks"])
    assert round(row["params"] / 1e6, 2) == row["paper"]["params_m"]


def test_table_reports_a_mismatch_with_exit_one(capsys, monkeypatch):
    wrong = dataclasses.replace(specs.PAPER["m"], params_m=7.44)
    monkeypatch.setitem(specs.PAPER, "m", wrong)
    code, out, _ = run(capsys, "table")
    assert code == 1
    assert "7.59 (7.44) MISMATCH" in out
    assert "1 of 35 compared cells differ: m:params_m" in out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_summary_lists_every_layer(variant, capsys):
    code, out, _ = run(capsys, "summary", variant)
    assert code == 0
    kinds = {line.split()[0]: line.split()[1] for line in out.splitlines()
             if line.startswith("head.deconv_layers_")}
    upsampler = {1: "Identity", 2: "UpsamplingBilinear2d"}
    assert [kinds[f"head.deconv_layers_{n}.upsample1"] for n in (1, 2, 3)] == [
        upsampler[u] for u in SPEC_PAGE[variant][2]]
    assert "head.final_layer" in out
    assert out.count("backbone.stages.") == 5 * sum(
        specs.get_spec(variant).backbone.depths)  # dwconv, norm, pwconv1, act, pwconv2


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_summary_json(variant, capsys):
    code, out, _ = run(capsys, "summary", variant.upper(), "--json")
    data = json.loads(out)
    assert code == 0
    assert data["variant"] == variant
    assert [h["upsample"] for h in data["head_layers"]] == SPEC_PAGE[variant][2]


@pytest.mark.parametrize("argv, message", [
    (["summary", "xl"], "unknown variant 'xl'; known variants: xs, s, m, l"),
    (["table", "--jsn"], "unrecognized arguments: --jsn"),
    (["tabel"], "invalid choice: 'tabel'"),
    ([], "required: command"),
], ids=["unknown-variant", "bad-flag", "bad-command", "no-command"])
def test_usage_error_is_one_line_exit_two(argv, message, capsys):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("cnp: error: ") and message in err


def test_console_entry_point_exit_code_and_stderr():
    result = subprocess.run([sys.executable, "-m", "cnp.cli", "summary", "xl"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "cnp: error: unknown variant 'xl'; known variants: xs, s, m, l\n"
