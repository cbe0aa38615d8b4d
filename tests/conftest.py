"""Checkpoint files shared by the checkpoint tests: generated once per session, in tmp;
and `uninstalled`, for what cnp says when a module of an extra is missing."""

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cnp import VARIANTS
from cnp.testing import seeded_model
from checkpoint_files import POSITIONAL_HEAD_VARIANTS, TINY, save_official
from onnx_exports import EXPORTS_AHEAD, Exports


def pytest_collection_finish(session):
    """Start, in one background process, the exports of S, M and L that the selected tests
    read (marker reads_export): 25-30 s of torch's exporter that then runs beside the other
    tests. Not under mutation testing (each mutant's run would start it; the export tests
    are `slow`, which mutation runs leave out), in an xdist worker, when only collecting, or
    with CNP_TEST_EXPORTS_AHEAD=0 (every export in this process, one after the other)."""
    config = session.config
    ahead = sorted({mark.args[0] for item in session.items
                    for mark in item.iter_markers("reads_export")} - {"xs"})
    if (not ahead or "MUTANT_UNDER_TEST" in os.environ or hasattr(config, "workerinput")
            or config.option.collectonly or os.environ.get("CNP_TEST_EXPORTS_AHEAD") == "0"):
        return
    directory = Path(tempfile.mkdtemp(prefix="cnp-exports-"))
    exports = Exports(directory, tuple(ahead))
    config.stash[EXPORTS_AHEAD] = exports
    config.add_cleanup(lambda: shutil.rmtree(directory, ignore_errors=True))
    config.add_cleanup(exports.stop)  # cleanups run last first: stop, then remove


class Released(dict):
    """variant → (file in the released form, the state_dict it was saved from), each
    written on first use, so that `pytest -k xs` builds only what it needs."""

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def __missing__(self, variant):
        state = seeded_model(variant, list(VARIANTS).index(variant)).state_dict()
        path = save_official(state, self.directory / f"ConvNeXtPose_{variant.upper()}.tar",
                             positional_head=variant in POSITIONAL_HEAD_VARIANTS)
        self[variant] = (path, state)
        return self[variant]


@pytest.fixture(scope="session")
def released(tmp_path_factory):
    return Released(tmp_path_factory.mktemp("released"))


@pytest.fixture
def s_model_labeled_xs(released, tmp_path):
    """S's weights in the released form, under XS's file name."""
    return save_official(released["s"][1], tmp_path / "ConvNeXtPose_XS.tar")


@pytest.fixture
def nonfinite_file(tiny_state, tmp_path):
    """A file whose final layer holds one NaN and one +Inf."""
    state = dict(tiny_state)
    weight = state["head.final_layer.weight"].clone()
    weight[0, 0, 0, 0], weight[1, 0, 0, 0] = float("nan"), float("inf")
    state["head.final_layer.weight"] = weight
    return save_official(state, tmp_path / "a.tar")


@pytest.fixture
def pytester(pytester, monkeypatch):
    """pytest's `pytester`, whose nested runs are never xdist workers: under `pytest -n N`
    this process is one, and syrupy reads that from the environment (a nested run would
    then, e.g., not report unused snapshots)."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
        monkeypatch.delenv(name, raising=False)
    return pytester


@pytest.fixture(scope="session")
def tiny_state():
    return seeded_model(TINY).state_dict()


# ---------------------------------------------------------------- running the command line


class CliResult:
    """What one `cnp` run left: exit code, stdout, stderr."""

    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:  # shown by pytest when an assertion on a result fails
        return f"CliResult(code={self.code}, out={self.out[-2000:]!r}, err={self.err!r})"


@pytest.fixture(scope="session")
def cli():
    """Run `cnp ARGS...` in this process (fast): cli("inspect", path) -> CliResult.
    Session-scoped (it holds no state), so module fixtures can share one expensive run."""
    import contextlib
    import io

    from cnp.cli import main

    def run(*argv) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(arg) for arg in argv])
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def cli_process():
    """Run `python -m cnp.cli ARGS...` in a fresh process: what a user's shell sees
    (tracebacks, the interpreter's exit code). Seconds each: mark callers `slow`."""
    import subprocess
    import sys

    def run(*argv, cwd=None) -> CliResult:
        done = subprocess.run([sys.executable, "-m", "cnp.cli", *map(str, argv)],
                              capture_output=True, text=True, cwd=cwd, timeout=300)
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def uninstalled(monkeypatch):
    """uninstalled("onnx", ...): importlib.util.find_spec, which cnp asks before importing an
    extra's module, finds neither those modules nor their submodules (they stay importable)."""
    def hide(*names: str) -> None:
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
            None if name.split(".")[0] in names else find_spec(name, *a)))
    return hide
