"""`pytest --cnp-checkpoints DIR` (cnp's pytest plugin) in a user's repository, a pytester
directory that is not cnp's: one test per file for its label and one for its manifest
snapshot, the snapshots written in that repository, a changed weight failing until
`--snapshot-update` accepts it, and pytest-xdist. cnp's own suite verifies checkpoint
directories the same way: there is no other implementation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import cnp
from checkpoint_files import save_official

SNAPSHOTS = "cnp_snapshots/checkpoints"
IDS = ["xs-ConvNeXtPose_XS.tar", "s-ConvNeXtPose_S.tar"]
MANIFESTS = {f"test_manifest_unchanged[{i}].json" for i in IDS}


@pytest.fixture
def repo(pytester, released):
    """A user's repository holding the released-form XS and S files in checkpoints/."""
    checkpoints = pytester.mkdir("checkpoints")
    for variant in ("xs", "s"):
        shutil.copy(released[variant][0], checkpoints)
    return pytester


def _run(pytester, *args):
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def _gate(pytester, *args):
    return _run(pytester, "--cnp-checkpoints=checkpoints", *args)


def _snapshots(pytester, directory=SNAPSHOTS) -> dict[str, bytes]:
    path = pytester.path / directory
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())} if path.exists() else {}


@pytest.fixture
def accepted(repo):
    """The repository after `pytest --cnp-checkpoints checkpoints --snapshot-update`."""
    _gate(repo, "--snapshot-update").assert_outcomes(passed=4)
    return _snapshots(repo)


def _change_one_weight(path: Path) -> None:
    stored = torch.load(path, weights_only=True)
    key = "module.backbone.stages.2.0.dwconv.weight"
    stored["network"][key] = stored["network"][key].clone()
    stored["network"][key][0, 0, 0, 0] += 1e-3
    save_official({k.removeprefix("module."): v for k, v in stored["network"].items()}, path)


def test_update_writes_one_snapshot_per_file_in_the_users_repository(accepted):
    assert set(accepted) == MANIFESTS
    assert not list(Path(cnp.__file__).parent.rglob("*.json"))  # none where cnp is installed


def test_unchanged_files_pass(repo, accepted):
    result = _gate(repo)
    result.assert_outcomes(passed=4)
    assert result.ret == 0


def test_dash_k_xs_selects_the_xs_file(repo, accepted):
    result = _gate(repo, "-k", "xs", "-v")
    result.assert_outcomes(passed=2, deselected=2)
    assert result.ret == 0
    assert all("[xs-" in line for line in result.outlines if "PASSED" in line)


def test_a_changed_weight_fails_its_manifest(repo, accepted):
    _change_one_weight(repo.path / "checkpoints" / "ConvNeXtPose_XS.tar")
    result = _gate(repo)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["FAILED *test_manifest_unchanged[[]xs-ConvNeXtPose_XS.tar[]]*"])


def test_snapshot_update_accepts_a_changed_weight(repo, accepted):
    _change_one_weight(repo.path / "checkpoints" / "ConvNeXtPose_XS.tar")
    _gate(repo, "--snapshot-update").assert_outcomes(passed=4)
    _gate(repo).assert_outcomes(passed=4)
    updated = _snapshots(repo)
    assert [name for name in updated if updated[name] != accepted[name]] == [
        f"test_manifest_unchanged[{IDS[0]}].json"]


def test_snapshot_update_without_the_option_keeps_them(repo, accepted):
    repo.makepyfile(test_mine="def test_mine():\n    pass\n")
    _run(repo, "--snapshot-update").assert_outcomes(passed=1)
    assert _snapshots(repo) == accepted


def test_ini_option_moves_the_snapshots(repo):
    repo.makeini("[pytest]\ncnp_snapshot_dir = verified/weights\n")
    _gate(repo, "--snapshot-update").assert_outcomes(passed=4)
    assert set(_snapshots(repo, "verified/weights/checkpoints")) == MANIFESTS
    assert not (repo.path / "cnp_snapshots").exists()


def test_missing_checkpoint_directory_is_a_usage_error(repo):
    result = _run(repo, "--cnp-checkpoints=none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--cnp-checkpoints none: no such directory*"])


def test_without_syrupy_the_gate_is_a_usage_error_naming_it(repo):
    result = _gate(repo, "-p", "no:syrupy")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--cnp-checkpoints*syrupy*"])


def test_a_folder_outside_needs_the_equals_form(repo, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere")
    result = _run(repo, "--cnp-checkpoints", str(outside))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*must be given as --cnp-checkpoints={outside}*"])


def test_a_folder_outside_with_the_equals_form_snapshots_here(repo, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere")
    shutil.copy(repo.path / "checkpoints" / "ConvNeXtPose_XS.tar", outside)
    _run(repo, f"--cnp-checkpoints={outside}", "--snapshot-update").assert_outcomes(passed=2)
    assert set(_snapshots(repo)) == {f"test_manifest_unchanged[{IDS[0]}].json"}


@pytest.mark.slow
def test_verify_in_parallel(repo, accepted):
    result = _gate(repo, "-n", "2", "-p", "no:benchmark")
    result.assert_outcomes(passed=4)
    assert result.ret == 0


@pytest.mark.slow
def test_update_in_parallel_is_refused(repo, accepted):
    refused = _gate(repo, "-n", "2", "--snapshot-update")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*--snapshot-update cannot run under pytest-xdist*"])
    assert _snapshots(repo) == accepted


# What decides the refusal, on the options pytest parsed (no run: `-n 2` in a nested run
# costs two fresh processes; the two runs above show the refusal end to end).
@pytest.mark.parametrize("args, refused", [
    (["--snapshot-update", "-n", "2"], True),
    (["--snapshot-update", "-n", "0"], False),  # xdist installed, no workers
    (["--snapshot-update", "-p", "no:xdist"], False),
    (["-n", "2"], False),  # verifying in parallel is fine
    (["-n", "2", "-p", "no:syrupy"], False),  # no snapshot tool, nothing to update
], ids=["update-in-parallel", "update-n-0", "update-without-xdist", "parallel-only",
        "parallel-without-syrupy"])
def test_only_a_snapshot_update_in_parallel_is_refused(args, refused, pytester):
    from cnp.plugin import refuse_parallel_snapshot_update

    config = pytester.parseconfig(*args)
    if refused:
        with pytest.raises(pytest.UsageError, match="--snapshot-update.*-n"):
            refuse_parallel_snapshot_update(config)
    else:
        refuse_parallel_snapshot_update(config)


def test_an_xdist_worker_leaves_the_refusal_to_the_controller(pytester):
    """Each worker parses the controller's options, -n included; the controller refused
    already if it had to, and a worker raising would only repeat it per worker."""
    from cnp.plugin import refuse_parallel_snapshot_update

    config = pytester.parseconfig("--snapshot-update", "-n", "2")
    config.workerinput = {"workerid": "gw0"}
    refuse_parallel_snapshot_update(config)
