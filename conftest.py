"""Project-wide pytest set-up: snapshot storage under fixtures/ and hypothesis profiles.

Checkpoint files are verified by cnp's own pytest plugin (cnp/plugin.py), as in any
repository: `pytest --cnp-checkpoints DIR`, snapshots under fixtures/checkpoints/ (the
`cnp_snapshot_dir` ini option in pyproject.toml)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

from cnp import testing
from cnp.plugin import refuse_parallel_snapshot_update
from cnp.plugin_tests.checkpoints import ReadableJSONExtension

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


class FixturesJSONExtension(ReadableJSONExtension):
    """One readable JSON file per snapshot: fixtures/<test module>/<test id>.json."""

    @classmethod
    def dirname(cls, *, test_location) -> str:
        return str(FIXTURES / Path(test_location.filepath).stem)


@pytest.fixture
def snapshot_json(snapshot):
    """syrupy's `snapshot`, stored under fixtures/ instead of __snapshots__/."""
    return snapshot.use_extension(FixturesJSONExtension)


class GoldenJSONExtension(FixturesJSONExtension):
    """Golden outputs: floats match within cnp.testing's RTOL/ATOL, not digit for digit."""

    def matches(self, *, serialized_data, snapshot_data) -> bool:
        if snapshot_data is None:
            return False
        return not testing.mismatches(json.loads(snapshot_data), json.loads(serialized_data))


@pytest.fixture
def snapshot_golden(snapshot):
    """`snapshot_json` with a tolerance: for float outputs that vary by platform noise."""
    return snapshot.use_extension(GoldenJSONExtension)


# pytest-benchmark times every benchmark by default. Here the default run executes each
# benchmark body once, as a plain correctness check (keeps `python -m pytest` fast); any
# option that asks for timings (--benchmark-only, --benchmark-enable, saving, comparing)
# runs them fully. Set before pytest-benchmark reads its options (tryfirst).
_BENCHMARK_REQUESTS = ("benchmark_only", "benchmark_enable", "benchmark_save",
                       "benchmark_autosave", "benchmark_compare", "benchmark_json",
                       "benchmark_histogram")


def _timing_requested(config) -> bool:
    return any(config.getoption(name, default=None) for name in _BENCHMARK_REQUESTS)


def _one_thread_unless_timing(config):
    """Correctness runs use one torch thread; timed benchmarks keep torch's default.

    On a busy 2-core machine OpenMP's spin-waiting makes small CPU convolutions 5-8 times
    slower on 2 threads than on 1 (measured: test_fast, test_checkpoints and test_benchmarks
    took 93 s on 2 threads and 20 s on 1 at load average 4.5). Results do not depend on
    it: the goldens move by < 0.1 of their tolerance between thread counts. OMP_NUM_THREADS
    carries the choice to the fresh processes some tests start.
    """
    if not _timing_requested(config):
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"


def pytest_xdist_auto_num_workers(config):
    """How many workers `-n auto` (pyproject's addopts) starts: one per CPU for a run of
    the suite or of a folder, none (this process runs the tests) where workers would be
    wrong or cost more than they save:
    - `--snapshot-update`: each worker sees only its share of the snapshots;
    - timed benchmarks: pytest-benchmark times nothing under xdist;
    - named test files or test ids: starting workers (each imports torch and collects)
      costs seconds, more than a few files' tests take.
    `-n N` on the command line is never changed; `-n 0` runs in this process."""
    if config.getoption("update_snapshots", default=False) or _timing_requested(config):
        return 0
    if not all(Path(arg.split("::")[0]).is_dir() for arg in config.args):
        return 0
    return None  # xdist's own count: the CPUs


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    refuse_parallel_snapshot_update(config)
    if hasattr(config.option, "benchmark_disable") and not _timing_requested(config):
        config.option.benchmark_disable = True  # see _BENCHMARK_REQUESTS
    _one_thread_unless_timing(config)


@pytest.fixture(autouse=True)
def fresh_caches_under_mutmut():
    """Under mutation testing (tests/mutation.py), empty cnp's caches before each test.

    mutmut links a mutant to the tests that run its code. A cached summary runs that code
    once per process, for the first test that asks, so every other test would be blind to
    the mutant. mutmut sets MUTANT_UNDER_TEST; without it the caches keep the suite fast.
    """
    if "MUTANT_UNDER_TEST" in os.environ:
        for module in [m for name, m in sys.modules.items() if name.startswith("cnp.")]:
            for value in vars(module).values():
                ours = getattr(value, "__module__", "") == module.__name__
                if ours and hasattr(value, "cache_clear"):
                    value.cache_clear()
    yield
