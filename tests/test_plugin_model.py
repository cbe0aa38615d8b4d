"""cnp's pytest plugin in a user's repository (a pytester directory, not cnp's): silent by
default; `--cnp-model TARGET` adds the `cnp check` checks as tests, one per check and
variant (`test_check[xs-keys]`), selectable with -k."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

import cnp.conformance  # noqa: F401 - imported here, its cache of cnp's outputs outlives nested runs
from implementations import IMPLEMENTATIONS

CHECK_NAMES = ["keys", "counts", "stages", "head", "upsampling", "output", "numerics"]
USER_TEST = "def test_mine():\n    assert 1 + 1 == 2\n"


@pytest.fixture
def repo(pytester):
    pytester.makepyfile(test_mine=USER_TEST, official=IMPLEMENTATIONS["official"],
                        batchnorm_eps_1e_3=IMPLEMENTATIONS["batchnorm_eps_1e_3"])
    return pytester


def _run(pytester, *args):
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def _ids(result, outcome: str) -> set[str]:
    return {line.split("::")[1].split()[0] for line in result.outlines
            if line.startswith("cnp-model::") and outcome in line}


def test_entry_point_registers_the_plugin():
    plugins = {e.name: e.value for e in entry_points(group="pytest11")}
    assert plugins.get("cnp") == "cnp.plugin"


def help_entries(lines: list[str]) -> dict[str, str]:
    """`pytest --help`'s entries (an option or ini name at two spaces) → their help text."""
    entries, name = {}, None
    for line in lines:
        if line.startswith("  ") and not line.startswith("   "):
            name, _, text = line.strip().partition(" ")
            entries[name] = text.strip()
        elif line.startswith("   ") and name:
            entries[name] += " " + line.strip()
        else:
            name = None
    return entries


def test_help_lists_the_plugins_options_under_one_heading(pytester):
    """`pytest --help`: a section titled with ConvNeXtPose and cnp, holding the three options,
    each with its help; the ini option with its help."""
    lines = pytester.runpytest("--help").outlines
    (start,) = [i for i, line in enumerate(lines)
                if "ConvNeXtPose" in line and "cnp" in line and line.endswith(":")]
    end = next(i for i in range(start + 1, len(lines)) if lines[i] and not lines[i][0].isspace())
    section = help_entries(lines[start + 1:end])
    assert [name.split("=")[0] for name in section] == [
        "--cnp-model", "--cnp-checkpoints", "--cnp-onnx"]
    assert all(len(text.split()) > 3 for text in section.values()), section
    ini = help_entries(lines)["cnp_snapshot_dir"]
    assert "snapshots" in ini and "cnp_snapshots" in ini  # what it holds, its default


def test_plain_pytest_collects_only_the_users_tests(repo):
    result = _run(repo, "--collect-only", "-q")
    assert result.ret == 0
    assert [line for line in result.outlines if "::" in line] == ["test_mine.py::test_mine"]


def test_plain_pytest_runs_only_the_users_tests(repo):
    result = _run(repo)
    result.assert_outcomes(passed=1)
    assert not (repo.path / "cnp_snapshots").exists()


def test_dash_k_xs_runs_the_xs_checks_only(repo):
    result = _run(repo, "--cnp-model", "official.py:build", "-k", "xs", "-v")
    result.assert_outcomes(passed=7, deselected=22)  # 4 variants x 7 checks + test_mine
    assert result.ret == 0
    assert _ids(result, "PASSED") == {f"test_check[xs-{name}]" for name in CHECK_NAMES}


def test_a_failing_check_fails_its_own_test_xs(repo):
    result = _run(repo, "--cnp-model", "batchnorm_eps_1e_3.py:build", "-k", "xs", "-v")
    result.assert_outcomes(passed=6, failed=1, deselected=22)
    assert _ids(result, "FAILED") == {"test_check[xs-numerics]"}
    result.stdout.fnmatch_lines(["numerics [[]xs[]]: heatmaps * in units of the golden tolerance*"])


def test_a_variant_not_provided_is_skipped(repo):
    result = _run(repo, "--cnp-model", "official.py:build", "-k", "[m-", "-rs")
    result.assert_outcomes(skipped=7, deselected=22)
    result.stdout.fnmatch_lines(["*official.py:build does not provide m (NotImplementedError)*"])


def test_dash_m_cnp_selects_only_the_plugins_tests(repo):
    result = _run(repo, "--cnp-model", "official.py:build", "-m", "cnp", "--collect-only", "-q")
    collected = [line for line in result.outlines if "::" in line]
    assert len(collected) == 28
    assert all(line.startswith("cnp-model::") for line in collected)


def test_a_bad_target_is_a_usage_error(repo):
    result = _run(repo, "--cnp-model", "absent.py:build")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--cnp-model absent.py:build: no such file: absent.py*"])


@pytest.mark.slow
def test_loading_the_plugin_imports_no_torch():
    # Every pytest run where cnp is installed loads the plugin: it must cost next to nothing.
    done = subprocess.run([sys.executable, "-c", "import sys, cnp.plugin; print('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
