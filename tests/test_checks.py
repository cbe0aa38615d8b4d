"""`Check`, the one "expected vs found" type: what every verdict of cnp reports.

A check that could not be made (ok None) is "not checked", never a pass, and is not among
the failures; JSON readers see lists where Python had tuples.
"""

from cnp.checks import Check, equal, failed, plain


def test_statuses_name_pass_fail_and_not_checked():
    statuses = [Check("keys", 1, 1, ok).status for ok in (True, False, None)]
    assert statuses == ["pass", "fail", "not checked"]


def test_equal_compares_tuples_and_lists_as_lists():
    check = equal("backbone.depths", (2, 2, 6, 2), [2, 2, 6, 2])
    assert (check.ok, check.expected, check.found) == (True, [2, 2, 6, 2], [2, 2, 6, 2])
    assert equal("backbone.depths", (2, 2, 6, 2), (3, 3, 9, 3)).ok is False


def test_equal_keeps_source_basis_and_detail():
    check = equal("params_m", 7.44, 7.44, source="paper", basis="stored", detail="why")
    assert (check.source, check.basis, check.detail) == ("paper", "stored", "why")
    assert (equal("depth_dim", 32, 32).source, equal("depth_dim", 32, 32).basis) == (
        "spec", "measured")


def test_failed_leaves_out_passes_and_unchecked():
    checks = [Check("keys", 1, 1, True), Check("counts", 1, 2, False),
              Check("numerics", None, None, None)]
    assert failed(checks) == [checks[1]]


def test_to_dict_is_json_ready():
    check = Check("heatmap_shape", (576, 32, 32), {"shape": (576, 64, 64)}, False, "spec",
                  "stored", "the head upsamples once more")
    assert check.to_dict() == {
        "check": "heatmap_shape", "expected": [576, 32, 32], "found": {"shape": [576, 64, 64]},
        "ok": False, "source": "spec", "basis": "stored", "detail": "the head upsamples once more"}


def test_plain_keeps_scalars():
    assert plain({"a": (1, [2.5, "x"]), "b": None}) == {"a": [1, [2.5, "x"]], "b": None}
