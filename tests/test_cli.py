"""`cnp table` and `cnp summary`: output, JSON fields and exit codes.

Figures are checked against docs/spec.md (tests/spec_page.py), never against cnp's own
tables.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from cnp import VARIANTS, specs
from spec_page import PAPER_PAGE, SPEC_PAGE

JSON_FIELDS = {"variant", "backbone", "depths", "dims", "head_channels", "head_upsample",
               "depth_dim", "heatmap_shape", "params", "state_dict_numel", "state_dict_keys",
               "gmacs", "paper"}
variants = pytest.mark.parametrize("variant", list(VARIANTS))


@pytest.fixture(scope="module")
def table_text(cli):
    return cli("table")


@pytest.fixture(scope="module")
def table_json(cli):
    result = cli("table", "--json")
    return result.code, {row["variant"]: row for row in json.loads(result.out)}


def table_rows(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines() if line.split(" ", 1)[0] in VARIANTS}


def test_table_exits_zero_when_everything_matches(table_text):
    assert table_text.code == 0, table_text.out
    assert table_text.out.splitlines()[-1].startswith("verdict: all ")
    assert table_text.err == ""


@variants
def test_table_row_shows_the_paper_figures(variant, table_text):
    paper = PAPER_PAGE[variant]
    row = table_rows(table_text.out)[variant]
    # The built model's count, then the paper's in parentheses: equal to 0.01M.
    assert f"{paper['params_m']:.2f} ({paper['params_m']:.2f}) ok" in row
    assert f"({paper['gflops']:.2f}, " in row and f"{paper['mpjpe']:.2f}" in row
    if paper["other_params_m"] is not None:
        assert f"{paper['other_params_m']:.2f} ({paper['other_params_m']:.2f}) ok" in row


def test_table_json_is_one_object_per_variant(table_json):
    code, rows = table_json
    assert code == 0
    assert list(rows) == list(VARIANTS)
    for row in rows.values():
        assert JSON_FIELDS <= set(row)
        assert {"params_m", "gflops", "mpjpe"} <= set(row["paper"])


@variants
def test_table_json_row_is_the_spec_page(variant, table_json):
    row, page = table_json[1][variant], SPEC_PAGE[variant]
    assert (row["backbone"], row["head_channels"], row["head_upsample"], row["depth_dim"],
            row["heatmap_shape"]) == (page["backbone"], page["head"], page["upsample"],
                                      page["depth_dim"], page["heatmap_shape"])
    assert row["ok"] and all(check["ok"] for check in row["checks"])


@variants
def test_table_json_row_carries_the_paper_figures(variant, table_json):
    paper, page = table_json[1][variant]["paper"], PAPER_PAGE[variant]
    assert (paper["params_m"], paper["gflops"], paper["mpjpe"], paper["pa_mpjpe"],
            paper["other_documents_params_m"]) == (
        page["params_m"], page["gflops"], page["mpjpe"], page["pa_mpjpe"], page["other_params_m"])


def test_table_reports_a_mismatch_with_exit_one(cli, monkeypatch):
    wrong = dataclasses.replace(specs.PAPER["m"], params_m=7.44)
    monkeypatch.setitem(specs.PAPER, "m", wrong)
    result = cli("table")
    assert result.code == 1
    assert f"{PAPER_PAGE['m']['params_m']:.2f} (7.44) MISMATCH" in result.out
    assert result.out.splitlines()[-1].endswith("differ: m:params_m")


@variants
def test_summary_lists_every_layer(variant, cli):
    result = cli("summary", variant)
    assert result.code == 0
    kinds = {line.split()[0]: line.split()[1] for line in result.out.splitlines()
             if line.startswith("head.deconv_layers_")}
    upsampler = {1: "Identity", 2: "UpsamplingBilinear2d"}
    assert [kinds[f"head.deconv_layers_{n}.upsample1"] for n in (1, 2, 3)] == [
        upsampler[u] for u in SPEC_PAGE[variant]["upsample"]]
    assert "head.final_layer" in result.out
    # dwconv, norm, pwconv1, act, pwconv2: five lines per block
    assert result.out.count("backbone.stages.") == 5 * sum(SPEC_PAGE[variant]["depths"])


@variants
def test_summary_json(variant, cli):
    result = cli("summary", variant.upper(), "--json")
    data = json.loads(result.out)
    assert result.code == 0
    assert data["variant"] == variant
    assert [h["upsample"] for h in data["head_layers"]] == SPEC_PAGE[variant]["upsample"]


@pytest.mark.parametrize("argv, message", [
    (["summary", "xl"], "unknown variant 'xl'; known variants: xs, s, m, l"),
    (["table", "--jsn"], "unrecognized arguments: --jsn"),
    (["tabel"], "invalid choice: 'tabel'"),
    ([], "required: command"),
], ids=["unknown-variant", "bad-flag", "bad-command", "no-command"])
def test_usage_error_is_one_line_exit_two(argv, message, cli):
    result = cli(*argv)
    assert result.code == 2
    assert result.out == ""
    assert result.err.count("\n") == 1 and result.err.startswith("cnp: error: ")
    assert message in result.err


@pytest.mark.slow
def test_console_entry_point_exit_code_and_stderr(cli_process):
    result = cli_process("summary", "xl")
    assert result.code == 2
    assert result.out == ""
    assert result.err == "cnp: error: unknown variant 'xl'; known variants: xs, s, m, l\n"
