"""`pytest --checkpoint-dir DIR` proven by nested pytest runs on generated checkpoint files:
parametrization and ids, snapshot creation, a changed weight failing the run until
`--snapshot-update` accepts it, and pytest-xdist. Without this the checkpoint tests would
only ever skip in the default run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from checkpoint_files import save_official

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOTS = Path("fixtures") / "test_checkpoint_dir"


@pytest.fixture
def project(pytester, released):
    """A copy of the project's conftest and checkpoint tests, and a directory of files."""
    pytester.makeconftest((ROOT / "conftest.py").read_text())
    pytester.makepyfile(test_checkpoint_dir=(ROOT / "tests" / "test_checkpoint_dir.py").read_text())
    checkpoints = pytester.mkdir("checkpoints")
    for variant in ("xs", "s"):
        shutil.copy(released[variant][0], checkpoints)
    return pytester, checkpoints


def _run(pytester, *args):
    # importlib: the copied test module has the same name as this suite's, already imported.
    return pytester.runpytest("--import-mode=importlib", "-p", "no:cacheprovider", *args)


def _snapshots(pytester) -> dict[str, bytes]:
    directory = pytester.path / SNAPSHOTS
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())} if directory.exists() else {}


def _change_one_weight(path: Path) -> None:
    stored = torch.load(path, weights_only=True)
    key = "module.backbone.stages.2.0.dwconv.weight"
    stored["network"][key] = stored["network"][key].clone()
    stored["network"][key][0, 0, 0, 0] += 1e-3
    save_official({k.removeprefix("module."): v for k, v in stored["network"].items()}, path)


def test_snapshot_gate(project, monkeypatch):
    pytester, checkpoints = project
    directory = f"--checkpoint-dir={checkpoints}"
    ids = ["xs-ConvNeXtPose_XS.tar", "s-ConvNeXtPose_S.tar"]

    # First run with --snapshot-update records one manifest per file, named by its id.
    _run(pytester, directory, "--snapshot-update").assert_outcomes(passed=4)
    assert set(_snapshots(pytester)) == {f"test_manifest_unchanged[{i}].json" for i in ids}
    accepted = _snapshots(pytester)

    # Unchanged files pass (the directory given by the environment this time); -k xs
    # selects the XS file and nothing else.
    with monkeypatch.context() as env:
        env.setenv("CNP_CHECKPOINT_DIR", str(checkpoints))
        _run(pytester).assert_outcomes(passed=4)
    selected = _run(pytester, directory, "-k", "xs", "-v")
    selected.assert_outcomes(passed=2, deselected=2)
    assert all("[xs-" in line for line in selected.outlines if "PASSED" in line)

    # One changed weight fails that file's manifest until --snapshot-update accepts it.
    _change_one_weight(checkpoints / "ConvNeXtPose_XS.tar")
    failed = _run(pytester, directory)
    failed.assert_outcomes(passed=3, failed=1)
    failed.stdout.fnmatch_lines(["FAILED *test_manifest_unchanged[[]xs-ConvNeXtPose_XS.tar[]]*"])
    _run(pytester, directory, "--snapshot-update").assert_outcomes(passed=4)
    _run(pytester, directory).assert_outcomes(passed=4)
    updated = _snapshots(pytester)
    assert updated.keys() == accepted.keys()
    assert [name for name in updated if updated[name] != accepted[name]] == [
        f"test_manifest_unchanged[{ids[0]}].json"]

    # Updating other snapshots without a checkpoint directory keeps these ones.
    skipped = _run(pytester, "--snapshot-update", "-rs")
    skipped.assert_outcomes(skipped=2)
    skipped.stdout.fnmatch_lines(["*run `pytest --checkpoint-dir DIR`*"])
    assert _snapshots(pytester) == updated


@pytest.mark.slow
def test_snapshot_gate_under_xdist(project):
    pytester, checkpoints = project
    directory = f"--checkpoint-dir={checkpoints}"
    _run(pytester, directory, "--snapshot-update").assert_outcomes(passed=4)
    accepted = _snapshots(pytester)

    # Verifying in parallel works; updating in parallel is refused, touching nothing.
    _run(pytester, directory, "-n", "2", "-p", "no:benchmark").assert_outcomes(passed=4)
    refused = _run(pytester, directory, "-n", "2", "--snapshot-update")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*--snapshot-update cannot run under pytest-xdist*"])
    assert _snapshots(pytester) == accepted


def test_missing_checkpoint_dir_is_a_usage_error(project):
    pytester, checkpoints = project
    result = _run(pytester, f"--checkpoint-dir={checkpoints / 'none'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--checkpoint-dir *none: no such directory*"])
