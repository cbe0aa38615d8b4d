"""tests/spec_page.py read docs/spec.md: every variant, with values of the right form."""

from spec_page import PAPER_PAGE, RELEASED_PAGE, SPEC_PAGE


def test_spec_page_tables_list_the_four_variants():
    assert list(SPEC_PAGE) == list(PAPER_PAGE) == list(RELEASED_PAGE) == ["xs", "s", "m", "l"]


def test_spec_page_variants_are_well_formed():
    for name, page in SPEC_PAGE.items():
        assert page["backbone"] in ("Atto", "Femto-L"), name
        assert len(page["depths"]) == 4 and min(page["depths"]) >= 1, name
        assert len(page["dims"]) == 4 and page["dims"] == sorted(page["dims"]), name
        assert len(page["head"]) == 3 and set(page["upsample"]) <= {1, 2}, name
        # The page's own rule (Output section): (H/32)·2^U, U = upsampling head layers.
        side = page["input"][0] // 32 * 2 ** page["upsample"].count(2)
        assert page["heatmap"] == [side, side], name
        assert page["layout"] == f"{page['upsample'].count(2)}UP", name


def test_spec_page_paper_figures_are_numbers():
    for name, paper in PAPER_PAGE.items():
        assert 0 < paper["params_m"] < 10 and 0 < paper["gflops"] < 10, name
        assert 40 < paper["mpjpe"] < 60, name
        other = paper["other_params_m"]
        assert other is None or 0 < other - paper["params_m"] < 0.02, name
