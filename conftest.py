"""Project-wide pytest set-up: snapshot storage under fixtures/, hypothesis profiles and
`--checkpoint-dir DIR` (checkpoint files to verify)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from syrupy.extensions.json import JSONSnapshotExtension

from cnp import testing

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


# ---------------------------------------------------------------- checkpoint directories

CHECKPOINT_DIR_ENV = "CNP_CHECKPOINT_DIR"
NO_CHECKPOINT_DIR = (f"no checkpoint directory given: run `pytest --checkpoint-dir DIR` (or set "
                     f"{CHECKPOINT_DIR_ENV}=DIR) to verify the checkpoint files in DIR")


def pytest_addoption(parser):
    parser.addoption(
        "--checkpoint-dir", metavar="DIR", default=os.environ.get(CHECKPOINT_DIR_ENV),
        help=f"verify every checkpoint file in DIR (default: ${CHECKPOINT_DIR_ENV})")


def _check_checkpoint_options(config):
    directory = config.getoption("checkpoint_dir")
    if directory and not Path(directory).is_dir():
        raise pytest.UsageError(f"--checkpoint-dir {directory}: no such directory")
    # Under pytest-xdist each worker sees only its share of the tests; snapshot tools have
    # deleted or truncated the others' snapshots as "unused". Refuse rather than risk it.
    workers = getattr(config.option, "numprocesses", None)
    if (config.getoption("update_snapshots", False) and workers not in (None, 0)
            and not hasattr(config, "workerinput")):
        raise pytest.UsageError(
            "--snapshot-update cannot run under pytest-xdist (-n): workers would each see "
            "part of the snapshots; run `pytest --snapshot-update` without -n")


def checkpoint_files(directory) -> list[Path]:
    return sorted(p for p in Path(directory).iterdir() if p.is_file() and not p.name.startswith("."))


def checkpoint_id(path: Path) -> str:
    """`<variant the name claims>-<file name>`, so `pytest -k xs` selects the XS files."""
    from cnp.checkpoints import variant_label

    label = variant_label(path) or "unlabeled"
    name = path.name if label == "xs" else re.sub("xs", "x_s", path.name, flags=re.IGNORECASE)
    return f"{label}-{name}"


def pytest_generate_tests(metafunc):
    if "checkpoint_file" not in metafunc.fixturenames:
        return
    directory = metafunc.config.getoption("checkpoint_dir")
    if directory:
        params = [pytest.param(p, id=checkpoint_id(p)) for p in checkpoint_files(directory)]
    else:
        params = [pytest.param(None, id="no-checkpoint-dir",
                               marks=pytest.mark.skip(reason=NO_CHECKPOINT_DIR))]
    metafunc.parametrize("checkpoint_file", params)


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


def _untimed_benchmarks_by_default(config):
    if hasattr(config.option, "benchmark_disable") and not any(
            config.getoption(name, default=None) for name in _BENCHMARK_REQUESTS):
        config.option.benchmark_disable = True


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    _check_checkpoint_options(config)
    _untimed_benchmarks_by_default(config)


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
