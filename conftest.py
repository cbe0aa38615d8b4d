"""Project-wide pytest set-up: the variant list and snapshot storage under fixtures/."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from syrupy.extensions.json import JSONSnapshotExtension

pytest_plugins = ["pytester"]  # nested runs prove the snapshot gates

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


# pytest-benchmark times every benchmark by default. Here the default run executes each
# benchmark body once, as a plain correctness check (keeps `python -m pytest` fast); any
# option that asks for timings (--benchmark-only, --benchmark-enable, saving, comparing)
# runs them fully. Set before pytest-benchmark reads its options (tryfirst).
_BENCHMARK_REQUESTS = ("benchmark_only", "benchmark_enable", "benchmark_save",
                       "benchmark_autosave", "benchmark_compare", "benchmark_json",
                       "benchmark_histogram")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if hasattr(config.option, "benchmark_disable") and not any(
            config.getoption(name, default=None) for name in _BENCHMARK_REQUESTS):
        config.option.benchmark_disable = True
