"""How a golden fingerprint is taken and compared: what passes, what fails, what a mismatch names.

`cnp check` and the plugin's --cnp-model print these lines; each must say where the output
departs (its path in the fingerprint) and by how much (found and stored values)."""

from __future__ import annotations

import math

import pytest
import torch

from cnp.model import soft_argmax
from cnp.testing import (ATOL, RTOL, deviations, fingerprint, golden_output, mismatches, seeded_input,
                         seeded_model, worst_ratio)
from checkpoint_files import TINY

STORED = {"coords": {"shape": [1, 2, 3], "values": [[1.0, -100.0], [0.0, 2.5]]}}


def _with(value, where=(0, 1)):
    """STORED with coords.values[where] replaced by `value`."""
    values = [list(row) for row in STORED["coords"]["values"]]
    values[where[0]][where[1]] = value
    return {"coords": {"shape": [1, 2, 3], "values": values}}


def test_an_identical_fingerprint_has_no_mismatch():
    assert mismatches(STORED, _with(-100.0)) == [] and worst_ratio(STORED, _with(-100.0)) == 0.0


def test_a_deviation_of_exactly_the_tolerance_passes():
    # At 0 the tolerance is ATOL alone: a deviation of ATOL is ratio 1, the last that passes.
    assert worst_ratio(STORED, _with(ATOL, (1, 0))) == 1.0
    assert mismatches(STORED, _with(ATOL, (1, 0))) == []
    assert mismatches(STORED, _with(2 * ATOL, (1, 0))) != []


def test_the_tolerance_grows_with_the_stored_value():
    # At -100 the tolerance is ATOL + RTOL·100; a deviation of 0.02 is about 2 of it.
    ratio = worst_ratio(STORED, _with(-100.02))
    assert ratio == pytest.approx(0.02 / (ATOL + RTOL * 100.0))
    assert 1.5 < ratio < 2.5


def test_a_mismatch_names_its_path_and_both_values():
    [where] = mismatches(STORED, _with(-99.0))
    assert where.startswith("/coords/values[0][1]: ") and "-99.0" in where and "-100.0" in where


def test_an_integer_found_for_a_stored_float_is_compared_as_a_number():
    assert mismatches(STORED, _with(-100)) == []


@pytest.mark.parametrize("found, named", [
    ({"coords": {"shape": [1, 2, 3]}}, ["/coords", "values"]),
    ({"coords": {"shape": [1, 2, 3], "values": [[1.0, -100.0]]}}, ["/coords/values", "1", "2"]),
    ({"coords": {"shape": [1, 2, 4], "values": STORED["coords"]["values"]}}, ["/coords/shape[2]", "4", "3"]),
    ({"coords": {"shape": [1, 2, 3.0], "values": STORED["coords"]["values"]}}, ["/coords/shape[2]"]),
    ({"coords": 5.0}, ["/coords", "5.0"]),
    ({"coords": {"shape": 6, "values": STORED["coords"]["values"]}}, ["/coords/shape", "6"]),
    ({"heatmaps": {}}, ["/: keys", "heatmaps", "coords"]),
], ids=["missing-key", "short-list", "other-integer", "float-for-integer", "number-for-a-dict",
        "number-for-a-list", "other-top-level-keys"])
def test_a_structural_difference_fails_outright_naming_it(found, named):
    [(where, ratio)] = [d for d in deviations(STORED, found) if d[1] > 0]
    assert ratio == math.inf
    assert where.startswith(named[0]) and all(part in where for part in named)


@pytest.mark.parametrize("batched", ["heatmaps", "coords"])
def test_a_fingerprint_is_taken_of_one_image(batched):
    heatmaps = torch.zeros(2 if batched == "heatmaps" else 1, 4, 2, 2)
    coords = torch.zeros(2 if batched == "coords" else 1, 2, 3)
    with pytest.raises(ValueError, match="batch of 1"):
        fingerprint(heatmaps, coords)


def test_a_fingerprint_that_stores_nothing_deviates_nowhere():
    assert (worst_ratio({}, {}), mismatches({}, {})) == (0.0, [])


def test_golden_coordinates_are_the_float64_soft_argmax_of_the_heatmaps():
    # In float32 the sums over a volume move by ~1e-3 voxel with the summation order (the
    # thread count): noise the tolerance would have to absorb. float64 leaves ~1e-12.
    model = seeded_model(TINY)
    image = seeded_input(TINY)
    with torch.no_grad():
        heatmaps = model.heatmaps(image)
    coords = soft_argmax(heatmaps.double(), TINY.joint_num, TINY.depth_dim)[0]
    stored = golden_output(model, image)["coords"]["values"]
    assert torch.allclose(torch.tensor(stored, dtype=torch.float64), coords, rtol=1e-7, atol=0)
