"""How the suite uses the CPUs: `-n auto` (pyproject's addopts) starts one xdist worker per
CPU for a run of the suite or of a folder, and none where workers would be wrong or cost
more than they save (docs/testing.md, "Parallel by default")."""

from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def auto_workers(request):
    """The root conftest's pytest_xdist_auto_num_workers, called with the given options."""
    root_conftest = next(plugin for plugin in request.config.pluginmanager.get_plugins()
                         if Path(getattr(plugin, "__file__", "")) == ROOT / "conftest.py")

    def ask(*args: str, **options) -> int | None:
        config = SimpleNamespace(args=[str(ROOT / arg) for arg in args],
                                 getoption=lambda name, default=None: options.get(name, default))
        return root_conftest.pytest_xdist_auto_num_workers(config)

    return ask


def test_the_default_options_ask_for_a_worker_per_cpu(request):
    addopts = request.config.getini("addopts")
    assert addopts[addopts.index("-n") + 1] == "auto"


@pytest.mark.parametrize("paths", [("tests",), ("tests", "fixtures")], ids=["tests", "two-folders"])
def test_a_run_of_folders_gets_xdists_worker_count(auto_workers, paths):
    assert auto_workers(*paths) is None  # None: xdist's own count, one per CPU


@pytest.mark.parametrize("path", ["tests/test_specs.py", "tests/test_specs.py::test_get_spec"],
                         ids=["file", "test-id"])
def test_a_run_of_named_tests_stays_in_this_process(auto_workers, path):
    assert auto_workers(path) == 0


def test_a_folder_beside_a_named_file_stays_in_this_process(auto_workers):
    assert auto_workers("tests", "tests/test_specs.py") == 0


def test_snapshot_updates_stay_in_this_process(auto_workers):
    assert auto_workers("tests", update_snapshots=True) == 0


@pytest.mark.parametrize("option", ["benchmark_only", "benchmark_enable", "benchmark_save",
                                    "benchmark_autosave", "benchmark_compare",
                                    "benchmark_json", "benchmark_histogram"])
def test_timed_benchmarks_stay_in_this_process(auto_workers, option):
    assert auto_workers("tests", **{option: True}) == 0

