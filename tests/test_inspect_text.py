"""`cnp inspect`'s text report: what a person reads states every fact the JSON holds.

Each fact is checked against where it came from: the state_dict the test saved, the form
it was saved in (tests/checkpoint_files.py), the spec page. Facts, not wording: numbers are
parsed out of their line, words are looked for, not matched as whole sentences.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
import torch

from checkpoint_files import packed, unzipped
from spec_page import SPEC_PAGE

# XS stores its head by name, M by position (as the released files do); 2 and 3 upsamplings.
SHOWN = ["xs", "m"]


def report_lines(cli, *args) -> list[str]:
    run = cli("inspect", *map(str, args))
    assert run.code in (0, 1), run.err
    return run.out.splitlines()


def listed(line: str, name: str) -> list[int]:
    """The integers listed after `name` ("depths 3,3,9,3" → [3, 3, 9, 3])."""
    found = re.search(rf"{name} \[?(\d+(?:, ?\d+)*)", line)
    assert found, f"no {name!r} in {line!r}"
    return [int(n) for n in re.findall(r"\d+", found[1])]


def count_before(line: str, word: str) -> int:
    """The number written just before `word` ("7,448,954 elements" → 7448954)."""
    found = re.search(rf"([\d,]+) {word}", line)
    assert found, f"no count of {word!r} in {line!r}"
    return int(found[1].replace(",", ""))


@pytest.fixture
def shown(released, cli):
    """shown[variant]: the text report's lines for its file in the released form. Run per
    test, not shared: mutmut links code to the tests that run it (tests/mutation.py)."""
    class Shown(dict):
        def __missing__(self, variant):
            self[variant] = report_lines(cli, released[variant][0])
            return self[variant]

    return Shown()


@pytest.mark.parametrize("variant", SHOWN)
def test_first_line_names_the_file_the_verdict_and_the_variant(shown, released, variant):
    first = shown[variant][0]
    assert first.startswith(f"{released[variant][0]}: ok: ")
    assert f"holds {variant.upper()}" in first
    assert f"expected {variant.upper()}" in first and "file name" in first


@pytest.mark.parametrize("variant", SHOWN)
def test_form_line_states_the_saved_form(shown, variant):
    form = shown[variant][1]
    assert form.lstrip().startswith("torch-zip")
    assert "'network'" in form and "prefix module." in form
    assert listed(form, "epoch") == [83]
    assert ("positional" if SPEC_PAGE[variant]["layout"] == "3UP" else "named") in form


@pytest.mark.parametrize("variant", SHOWN)
def test_form_line_counts_the_saved_tensors_dtypes_and_elements(shown, released, variant):
    form, state = shown[variant][1], released[variant][1]
    assert count_before(form, "tensors") == len(state)
    assert count_before(form, "elements") == sum(t.numel() for t in state.values())
    dtypes = Counter(str(t.dtype).removeprefix("torch.") for t in state.values())
    for dtype, count in dtypes.items():
        assert listed(form, dtype) == [count]


@pytest.mark.parametrize("variant", SHOWN)
def test_architecture_line_is_the_spec_page(shown, variant):
    line, page = shown[variant][2], SPEC_PAGE[variant]
    assert listed(line, "depths") == page["depths"] and listed(line, "dims") == page["dims"]
    assert listed(line, "kernel") == [7]
    assert listed(line, "head") == page["head"] and listed(line, "kernels") == [3, 3, 3]
    assert listed(line, "final") == [page["final_out"]]
    assert count_before(line, "joints") == page["joints"]
    assert count_before(line, "depth") == page["depth_dim"]


@pytest.mark.parametrize("variant", SHOWN)
def test_upsampling_line_is_the_spec_page_and_says_it_was_inferred(shown, variant):
    line = shown[variant][3]
    assert listed(line, "upsampling") == SPEC_PAGE[variant]["upsample"]
    assert "inferred" in line


@pytest.mark.parametrize("variant", SHOWN)
def test_a_match_lists_no_differences(shown, variant):
    assert len(shown[variant]) == 4 and not any("difference" in line for line in shown[variant])


def test_mismatch_names_the_variant_held_and_the_one_expected(s_model_labeled_xs, cli):
    first = report_lines(cli, s_model_labeled_xs)[0]
    assert first.startswith(f"{s_model_labeled_xs}: MISMATCH: ")
    assert "holds S" in first and "expected XS" in first and "file name" in first


@pytest.mark.parametrize("field, page_field", [("backbone.depths", "depths"),
                                               ("backbone.dims", "dims"),
                                               ("head.channels", "head")])
def test_mismatch_names_each_difference_with_both_values(s_model_labeled_xs, cli, field, page_field):
    lines = [line for line in report_lines(cli, s_model_labeled_xs) if f"difference {field}:" in line]
    assert len(lines) == 1
    assert listed(lines[0], "expected") == SPEC_PAGE["xs"][page_field]
    assert listed(lines[0], "found") == SPEC_PAGE["s"][page_field]
    assert "stored" in lines[0]  # read off the file, not measured


def test_expected_variant_from_the_argument(s_model_labeled_xs, cli):
    first = report_lines(cli, "--expect", "s", s_model_labeled_xs)[0]
    assert ": ok: " in first and "expected S" in first and "argument" in first


@pytest.fixture(scope="module")
def bare_xs(released, tmp_path_factory):
    path = tmp_path_factory.mktemp("bare") / "weights.pth"
    torch.save(released["xs"][1], path)
    return path


def test_a_bare_state_dict_has_no_wrapper_prefix_or_epoch(bare_xs, cli):
    form = report_lines(cli, bare_xs)[1]
    assert "bare state_dict" in form and "no prefix" in form and "epoch" not in form
    assert "'network'" not in form and "module." not in form


def test_an_archive_member_is_named_with_its_container(bare_xs, tmp_path, cli):
    archive = packed(tmp_path / "weights.tar.gz", {"inner/a.pth": bare_xs})
    form = report_lines(cli, archive)[1]
    assert "member inner/a.pth" in form and "tar.gz" in form


def test_an_unzipped_folder_names_its_sub_folder(released, tmp_path, cli):
    folder = unzipped(released["xs"][0], tmp_path / "extracted")
    form = report_lines(cli, folder.parent)[1]
    assert form.lstrip().startswith("torch-folder") and f"sub-folder {folder.name}" in form


def test_every_prefix_is_named_outermost_first(tiny_state, tmp_path, cli):
    path = tmp_path / "compiled_in_dataparallel.pth"
    torch.save({f"module._orig_mod.{key}": value for key, value in tiny_state.items()}, path)
    form = report_lines(cli, path)[1]
    assert "prefix module." in form and "prefix _orig_mod." in form
    assert form.index("prefix module.") < form.index("prefix _orig_mod.")


def test_fingerprints_option_reports_nonfinite_values_with_their_tensor(nonfinite_file, cli):
    assert not any("nonfinite" in line for line in report_lines(cli, nonfinite_file))  # unread
    [line] = [line for line in report_lines(cli, "--fingerprints", nonfinite_file)
              if "nonfinite" in line]
    assert "head.final_layer.weight" in line and listed(line, "'head.final_layer.weight':") == [2]


def test_an_unreadable_file_does_not_stop_the_files_after_it(released, tmp_path, cli):
    missing = tmp_path / "none.tar"
    run = cli("inspect", missing, released["xs"][0])
    assert run.code == 2
    assert run.err.count("\n") == 1 and str(missing) in run.err
    assert run.out.startswith(f"{released['xs'][0]}: ok: ")
