"""`cnp table` and `cnp summary`: output, JSON fields and exit codes.

Figures are checked against docs/spec.md (tests/spec_page.py), never against cnp's own
tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re

import pytest

from cnp import VARIANTS, get_spec, specs
from cnp.analysis import MAC_CONVENTION
from cnp.cli import count, make_parser, positive_int
from cnp.errors import InputError, one_line
from spec_page import CHECK_COLUMNS, PAPER_PAGE, RELEASED_PAGE, SPEC_PAGE
from test_closed_form import closed_form_buffers, closed_form_keys, closed_form_macs, closed_form_params

JSON_FIELDS = {"variant", "backbone", "depths", "dims", "head_channels", "head_upsample",
               "depth_dim", "heatmap_shape", "params", "state_dict_numel", "state_dict_keys",
               "gmacs", "paper"}
variants = pytest.mark.parametrize("variant", list(VARIANTS))


# Per test: with the summaries cached a run takes milliseconds, and under mutation testing
# each test then runs the code it checks (tests/mutation.py).
@pytest.fixture
def table_text(cli):
    return cli("table")


@pytest.fixture
def table_json(cli):
    result = cli("table", "--json")
    return result.code, {row["variant"]: row for row in json.loads(result.out)}


def columns(out: str, first: str) -> list[dict[str, str]]:
    """A table as printed, read by its header (the line that starts with column `first`):
    one dict per row, keyed by column name, down to the first blank line."""
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{first} "))
    names, starts, end = re.split(r" {2,}", lines[at].strip()), [], 0
    for name in names:
        starts.append(lines[at].index(name, end))
        end = starts[-1] + len(name)
    ends = starts[1:] + [None]
    rows = []
    for line in lines[at + 1:]:
        if not line.strip():
            break
        rows.append({name: line[a:b].strip() for name, a, b in zip(names, starts, ends)})
    return rows


def table_cells(out: str) -> dict[str, dict[str, str]]:
    return {row["variant"]: row for row in columns(out, "variant")}


def commas(values) -> str:
    return ",".join(str(v) for v in values)


GMACS_CELL = re.compile(r"(\d+\.\d{3}) \((\d+\.\d{2}), ([+-]\d+\.\d)%\) (?:ok|MISMATCH)")
COMPARED_CELLS = (len(CHECK_COLUMNS) * len(SPEC_PAGE) + 2 * len(PAPER_PAGE)  # params, GFLOPs
                  + sum(p["other_params_m"] is not None for p in PAPER_PAGE.values()))


def test_table_exits_zero_when_everything_matches(table_text):
    assert table_text.code == 0, table_text.out
    assert all(line == line.rstrip() for line in table_text.out.splitlines())
    assert table_text.out.splitlines()[-1] == f"verdict: all {COMPARED_CELLS} compared cells match"
    assert table_text.err == ""


@variants
def test_table_columns_are_the_spec_page(variant, table_text):
    cells, page = table_cells(table_text.out)[variant], SPEC_PAGE[variant]
    assert (cells["backbone"], cells["depths"], cells["dims"], cells["head"],
            cells["upsample"], cells["depth_dim"], cells["heatmap"]) == (
        page["backbone"], commas(page["depths"]), commas(page["dims"]), str(page["head"][0]),
        commas(page["upsample"]) + " ok", str(page["depth_dim"]),
        "x".join(str(v) for v in page["heatmap"]) + " ok")


@variants
def test_table_row_shows_the_paper_figures(variant, table_text):
    cells, paper = table_cells(table_text.out)[variant], PAPER_PAGE[variant]
    # The built model's count, then the paper's in parentheses: equal to 0.01M.
    assert cells["params M (paper)"] == f"{paper['params_m']:.2f} ({paper['params_m']:.2f}) ok"
    quoted = paper["other_params_m"]
    assert cells["state_dict M (quoted)"].endswith(f"({quoted:.2f}) ok" if quoted else "(-)")
    if RELEASED_PAGE[variant]["state_dict_numel"] is not None:
        released = RELEASED_PAGE[variant]["state_dict_numel"] / 1e6
        assert cells["state_dict M (quoted)"].startswith(f"{released:.2f} ")
    pa_mpjpe = "-" if paper["pa_mpjpe"] is None else f"{paper['pa_mpjpe']:.1f}"
    assert (cells["MPJPE"], cells["PA-MPJPE"]) == (f"{paper['mpjpe']:.2f}", pa_mpjpe)


@variants
def test_table_gmacs_cell_gives_the_paper_figure_and_the_difference(variant, table_text):
    cell = table_cells(table_text.out)[variant]["GMACs (paper GFLOPs)"]
    assert cell.endswith(" ok")
    gmacs, gflops, percent = map(float, GMACS_CELL.fullmatch(cell).groups())
    assert gflops == PAPER_PAGE[variant]["gflops"]
    assert gmacs == pytest.approx(gflops, rel=0.01)
    assert percent == pytest.approx((gmacs / gflops - 1) * 100, abs=0.11)  # both rounded


def test_table_notes_give_the_other_mac_conventions(table_text):
    # One line per convention, each "xs 0.815 (-0.6%), s ...": conv weights alone, then
    # every element-wise operation counted too. cnp's figure lies between the two.
    lines = [re.findall(r"(\w+) (\d+\.\d{3}) \(([+-]\d+\.\d)%\)", line)
             for line in table_text.out.splitlines() if line.startswith("    xs ")]
    assert [[name for name, *_ in line] for line in lines] == [list(VARIANTS)] * 2
    cells = table_cells(table_text.out)
    for (name, low, low_percent), (_, high, high_percent) in zip(*lines):
        gflops = PAPER_PAGE[name]["gflops"]
        gmacs = float(cells[name]["GMACs (paper GFLOPs)"].split()[0])
        assert float(low) < gmacs < float(high)
        for value, percent in ((low, low_percent), (high, high_percent)):
            assert float(percent) == pytest.approx((float(value) / gflops - 1) * 100, abs=0.11)


def test_table_says_what_it_measured_and_counts(table_text):
    size = "x".join(str(v) for v in SPEC_PAGE["xs"]["input"])
    assert f"3x{size} input" in table_text.out.splitlines()[0]
    for fact in ("trainable parameters", "running_mean", "running_var", "num_batches_tracked",
                 MAC_CONVENTION, "torch.utils.flop_counter", "Human3.6M"):
        assert fact in table_text.out


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


@variants
def test_table_json_counts_are_the_closed_forms(variant, table_json):
    row, spec = table_json[1][variant], get_spec(variant)
    buffers = closed_form_buffers(spec)
    assert (row["params"], row["state_dict_numel"], row["batchnorm_buffer_numel"],
            row["state_dict_keys"]) == (
        closed_form_params(spec)["params"], buffers["state_dict_numel"],
        buffers["batchnorm_buffer_numel"], closed_form_keys(spec)["total"])
    assert (row["joint_num"], row["head_kernels"]) == (SPEC_PAGE[variant]["joints"], [3, 3, 3])


@variants
def test_table_json_macs_are_the_closed_forms(variant, table_json):
    row, macs = table_json[1][variant], closed_form_macs(get_spec(variant))
    everything = sum(macs[part] for part in ("total", "batchnorm", "relu", "upsample",
                                             "residual_add"))
    # GMACs to four decimals, under three conventions
    assert (row["macs"], row["gmacs"], row["gmacs_conv_weights_only"],
            row["gmacs_all_elementwise"], row["mac_convention"]) == (
        macs["total"], round(macs["total"] / 1e9, 4), round(macs["conv_weights"] / 1e9, 4),
        round(everything / 1e9, 4), MAC_CONVENTION)


@variants
def test_table_json_checks_carry_expected_and_found(variant, table_json):
    checks = {c["check"]: (c["expected"], c["found"], c["source"])
              for c in table_json[1][variant]["checks"]}
    page, paper = SPEC_PAGE[variant], PAPER_PAGE[variant]
    for name, column in CHECK_COLUMNS.items():
        assert checks[name] == (page[column], page[column], "spec"), name
    assert checks["params_m"] == (paper["params_m"], paper["params_m"], "paper")


@pytest.fixture
def paper_says_m_has_fewer_params(monkeypatch):
    """The paper table with M at S's 7.44M: what a typo in cnp/specs.py would look like."""
    monkeypatch.setitem(specs.PAPER, "m", dataclasses.replace(specs.PAPER["m"], params_m=7.44))


def test_summary_mismatch_line_names_cell_expected_source_found(paper_says_m_has_fewer_params,
                                                                cli):
    result = cli("summary", "m")
    assert result.code == 1
    [line] = [line for line in result.out.splitlines() if "MISMATCH" in line]
    assert line.startswith("MISMATCH params_m")
    assert "7.44 (paper)" in line and f"found {PAPER_PAGE['m']['params_m']}" in line


def test_summary_json_reports_the_failing_check(paper_says_m_has_fewer_params, cli):
    result = cli("summary", "m", "--json")
    assert result.code == 1
    failing = [c for c in json.loads(result.out)["checks"] if not c["ok"]]
    assert failing == [{"check": "params_m", "expected": 7.44, "found": PAPER_PAGE["m"]["params_m"],
                        "ok": False, "source": "paper", "basis": "measured", "detail": ""}]


@pytest.fixture
def table_says_m_has_depth_32(monkeypatch):
    """The variants table with M at S's depth_dim: a typo in cnp/specs.py."""
    monkeypatch.setitem(specs.VARIANTS, "m", dataclasses.replace(specs.VARIANTS["m"], depth_dim=32))


def test_table_json_shows_the_model_built_from_the_table(table_says_m_has_depth_32, cli):
    result = cli("table", "--json")
    row = {row["variant"]: row for row in json.loads(result.out)}["m"]
    joints, side = SPEC_PAGE["m"]["joints"], SPEC_PAGE["m"]["heatmap"][0]
    assert (row["depth_dim"], row["joint_num"], row["heatmap_shape"]) == (
        32, joints, [joints * 32, side, side])


def test_table_verdict_lists_every_failing_cell(table_says_m_has_depth_32, cli):
    # A smaller final layer: the architecture cells follow the table, the paper's figures fail.
    result = cli("table")
    assert result.code == 1
    verdict, _, cells = result.out.splitlines()[-1].partition(" compared cells differ: ")
    assert verdict == f"verdict: 3 of {COMPARED_CELLS}"
    assert set(cells.split(", ")) == {"m:params_m", "m:gflops", "m:state_dict_m"}


def test_table_shows_how_far_a_failing_gmacs_cell_is(table_says_m_has_depth_32, cli):
    # Half the final layer of M: about 20% under the paper, in the cell and in the notes.
    out, gflops = cli("table").out, PAPER_PAGE["m"]["gflops"]
    gmacs, _, percent = GMACS_CELL.fullmatch(table_cells(out)["m"]["GMACs (paper GFLOPs)"]).groups()
    others = [re.search(r"\bm (\d+\.\d{3}) \(([+-]\d+\.\d)%\)", line).groups()
              for line in out.splitlines() if line.startswith("    xs ")]
    for value, percent in [(gmacs, percent), *others]:
        assert float(percent) < -15
        assert float(percent) == pytest.approx((float(value) / gflops - 1) * 100, abs=0.11)


def test_table_reports_a_mismatch_with_exit_one(paper_says_m_has_fewer_params, cli):
    result = cli("table")
    assert result.code == 1
    assert f"{PAPER_PAGE['m']['params_m']:.2f} (7.44) MISMATCH" in result.out
    assert result.out.splitlines()[-1].endswith("differ: m:params_m")


@variants
def test_summary_lists_every_layer(variant, cli):
    result = cli("summary", variant)
    assert result.code == 0
    layers = {row["layer"]: row for row in columns(result.out, "layer")}
    upsampler = {1: "Identity", 2: "UpsamplingBilinear2d"}
    assert [layers[f"head.deconv_layers_{n}.upsample1"]["kind"] for n in (1, 2, 3)] == [
        upsampler[u] for u in SPEC_PAGE[variant]["upsample"]]
    # dwconv, norm, pwconv1, act, pwconv2: five lines per block
    assert sum(name.startswith("backbone.stages.") for name in layers) == 5 * sum(
        SPEC_PAGE[variant]["depths"])


@variants
def test_summary_final_layer_row(variant, cli):
    # A 1×1 convolution from the head depth to joints·depth_dim channels, with bias, over
    # the heatmap: one weight MAC per input channel and one bias add per output element.
    page = SPEC_PAGE[variant]
    row = {row["layer"]: row for row in columns(cli("summary", variant).out, "layer")}[
        "head.final_layer"]
    c, out, (h, w) = page["head"][2], page["final_out"], page["heatmap"]
    assert row == {"layer": "head.final_layer", "kind": "Conv2d", "in": f"1x{c}x{h}x{w}",
                   "out": f"1x{out}x{h}x{w}", "params": f"{c * out + out:,}",
                   "MACs": f"{out * h * w * (c + 1):,}"}


@variants
def test_summary_names_the_variant_and_its_figures(variant, cli):
    page, paper, out = SPEC_PAGE[variant], PAPER_PAGE[variant], cli("summary", variant).out
    assert out.startswith(f"ConvNeXtPose-{variant.upper()}: {page['backbone']} backbone")
    volumes = "x".join(str(v) for v in (page["joints"], page["depth_dim"], *page["heatmap"]))
    for fact in (f"(paper {paper['params_m']}M)", f"paper {paper['gflops']} GFLOPs",
                 MAC_CONVENTION, "x".join(str(v) for v in page["heatmap_shape"]),
                 f"volumes {volumes}", f"coordinates {page['joints']}x3"):
        assert fact in out


@variants
def test_summary_json(variant, cli):
    result = cli("summary", variant.upper(), "--json")
    data = json.loads(result.out)
    assert result.code == 0
    assert data["variant"] == variant
    assert [h["upsample"] for h in data["head_layers"]] == SPEC_PAGE[variant]["upsample"]


def test_usage_names_the_command_cnp():
    # Also under `python -m cnp.cli`, where argparse would name the file.
    parser = make_parser()
    assert parser.format_usage().startswith("usage: cnp ") and parser.description


@pytest.mark.parametrize("text, value", [("1", 1), ("8", 8)])
def test_positive_int_accepts_one_and_more(text, value):
    assert positive_int(text) == value


@pytest.mark.parametrize("text", ["0", "-3", "2.5", "x"])
def test_positive_int_refuses_the_rest_naming_it(text):
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(text))):
        positive_int(text)


def test_count_accepts_zero():
    assert (count("0"), count("12")) == (0, 12)


def test_count_refuses_a_non_number_naming_it():
    with pytest.raises(argparse.ArgumentTypeError, match="'-1'"):
        count("-1")


def test_input_error_is_the_path_then_the_problem(tmp_path):
    error = InputError(tmp_path / "x.pt", "no such file")
    assert (error.path, error.problem) == (str(tmp_path / "x.pt"), "no such file")
    assert str(error) == f"{tmp_path / 'x.pt'}: no such file"


def test_a_quoted_library_message_is_its_first_nonblank_line():
    # A one-line error quotes a library's multi-line message by its first line with words.
    assert one_line(ValueError("\n   \n  size mismatch for head.final_layer  \nsee above")) == \
        "size mismatch for head.final_layer"


def test_a_quoted_message_without_words_is_the_error_type():
    assert one_line(OSError()) == "OSError"


def _commands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


@pytest.mark.parametrize("command", list(_commands(make_parser()).choices))
def test_command_and_its_options_have_help(command):
    # `cnp --help` lists each command with a line; `cnp COMMAND --help` each option.
    commands = _commands(make_parser())
    assert next(c for c in commands._choices_actions if c.dest == command).help
    assert [a.dest for a in commands.choices[command]._actions if not a.help] == []


@pytest.mark.parametrize("argv, message", [
    (["summary", "xl"], "unknown variant 'xl'; known variants: xs, s, m, l"),
    (["table", "--jsn"], "unrecognized arguments: --jsn"),
    (["tabel"], "invalid choice: 'tabel'"),
    ([], "required: command"),
    (["summary"], "required: variant"),
], ids=["unknown-variant", "bad-flag", "bad-command", "no-command", "no-variant"])
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
