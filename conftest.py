"""Project-wide pytest set-up: the variant list and snapshot storage under fixtures/."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from syrupy.extensions.json import JSONSnapshotExtension

from cnp import golden

ROOT = Path(__file__).resolve().parent
FIXTURES = ROOT / "fixtures"

# Hypothesis profiles: "ci" (default) is fast and deterministic, so a red run reproduces;
# "thorough" explores far more of the spec space: CNP_HYPOTHESIS_PROFILE=thorough pytest
settings.register_profile("ci", max_examples=25, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile(os.environ.get("CNP_HYPOTHESIS_PROFILE", "ci"))


class FixturesJSONExtension(JSONSnapshotExtension):
    """One readable JSON file per snapshot: fixtures/<test module>/<test id>.json."""

    @classmethod
    def dirname(cls, *, test_location) -> str:
        return str(FIXTURES / Path(test_location.filepath).stem)

    def serialize(self, data, **kwargs) -> str:
        # Lists of numbers (shapes, dims) on one line: a diff then shows one line per layer.
        text = super().serialize(data, **kwargs)
        return _FLAT_LIST.sub(lambda m: json.dumps(json.loads(m.group(0))), text)


_FLAT_LIST = re.compile(r"\[[^\[\]{}\"]*\]")


@pytest.fixture
def snapshot_json(snapshot):
    """syrupy's `snapshot`, stored under fixtures/ instead of __snapshots__/."""
    return snapshot.use_extension(FixturesJSONExtension)


class GoldenJSONExtension(FixturesJSONExtension):
    """Golden outputs: floats match within cnp.golden's RTOL/ATOL, not digit for digit."""

    def matches(self, *, serialized_data, snapshot_data) -> bool:
        if snapshot_data is None:
            return False
        return not golden.mismatches(json.loads(snapshot_data), json.loads(serialized_data))


@pytest.fixture
def snapshot_golden(snapshot):
    """`snapshot_json` with a tolerance: for float outputs that vary by platform noise."""
    return snapshot.use_extension(GoldenJSONExtension)


@pytest.fixture(scope="module")
def single_thread():
    """Run a test module's torch ops on one thread, then restore the thread count.

    On a busy 2-core machine OpenMP's spin-waiting makes small CPU convolutions 5-8 times
    slower on 2 threads than on 1 (measured: tests/test_golden.py, test_semantics.py and
    test_closed_form.py take 45 s instead of 6 s). Results do not depend on it: the
    goldens move by < 0.1 of their tolerance between thread counts.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
