"""cnp's verdicts (cnp.analysis.compare): each cell names the field, the value the spec or
the paper expects, the value the built model has, and where the expected value comes from.

`cnp table --json`, `cnp summary --json` and the MISMATCH lines print these fields as they
are, so a blank or swapped field here is a wrong report to the user.
"""

from __future__ import annotations

import dataclasses

import pytest

from cnp import VARIANTS, get_spec, summarize
from cnp.analysis import compare
from spec_page import CHECK_COLUMNS, PAPER_PAGE, SPEC_PAGE


def cells(checks) -> dict:
    return {c.check: (c.expected, c.found, c.ok, c.source) for c in checks}


@pytest.mark.parametrize("claimed, built", [("xs", "s"), ("s", "m"), ("m", "l")],
                         ids=["xs-holding-s", "s-holding-m", "m-holding-l"])
def test_each_cell_reports_the_spec_and_the_model(claimed, built):
    """A variant's spec against another variant's model: a cell fails where they differ."""
    expected, found = SPEC_PAGE[claimed], SPEC_PAGE[built]
    want = {name: (expected[column], found[column], expected[column] == found[column], "spec")
            for name, column in CHECK_COLUMNS.items()}
    paper, other = PAPER_PAGE[claimed], PAPER_PAGE[built]
    want["params_m"] = (paper["params_m"], other["params_m"], False, "paper")
    if paper["other_params_m"] is not None:
        want["state_dict_m"] = (paper["other_params_m"], other["other_params_m"], False,
                                "other documents")
    reported = cells(compare(get_spec(claimed), summarize(built)))
    gflops = reported.pop("gflops")
    assert reported == want
    assert gflops[0] == paper["gflops"] and gflops[2:] == (False, "paper")
    assert gflops[1] == pytest.approx(other["gflops"], rel=0.01)  # GMACs, to 0.001
    assert gflops[1] == round(gflops[1], 3)


def test_a_new_architecture_gets_spec_cells_only_and_passes_them():
    # M's head with S's depth: depth_dim 32 on 64×64 heatmaps, so depth and side differ.
    spec = dataclasses.replace(get_spec("m"), depth_dim=32)
    reported = cells(compare(spec, summarize(spec)))
    assert set(reported) == set(CHECK_COLUMNS)
    assert reported["depth_dim"] == (32, 32, True, "spec")
    assert all(ok for _, _, ok, _ in reported.values())


@pytest.mark.parametrize("beyond, ok", [(0, True), (1, False)], ids=["at", "beyond"])
@pytest.mark.parametrize("sign", [1, -1], ids=["above", "below"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gflops_pass_within_one_percent_of_the_paper(variant, sign, beyond, ok):
    paper_macs = round(PAPER_PAGE[variant]["gflops"] * 1e9)
    total = paper_macs + sign * (paper_macs // 100 + beyond)  # 1% of the paper, plus one MAC
    summary = summarize(variant)
    summary = dataclasses.replace(summary, macs=dataclasses.replace(summary.macs, total=total))
    gflops = {c.check: c for c in compare(get_spec(variant), summary)}["gflops"]
    assert gflops.ok is ok
    assert "1%" in gflops.detail
