"""cnp's pytest plugin, installed with the package (entry point `pytest11`, name `cnp`).

It is loaded by every pytest run where cnp is installed and is silent unless asked: it
registers its options and collects nothing, imports no torch and changes nothing unless
one of them is given.

  --cnp-model TARGET    the `cnp check` checks of TARGET (FILE.py:NAME or MODULE:NAME) as
                        tests, one per variant and check: `test_check[xs-keys]` ...
                        `test_check[l-numerics]`
  --cnp-checkpoints DIR every file in DIR holds what its name says (`test_holds_what_its_name_says`)
                        and its tensors are those `pytest --snapshot-update` last accepted
                        (`test_manifest_unchanged`, a syrupy snapshot with sha256 per tensor)
  --cnp-onnx PATH       the `cnp check-onnx` checks of an .onnx file, or of every .onnx file
                        in the folder PATH, one test per file and check:
                        `test_export[xs-pose_xs.onnx-numerics]` (needs the onnx extra)
  ini cnp_snapshot_dir  where those snapshots live, relative to the rootdir (default
                        cnp_snapshots; the files go to its checkpoints/ folder)

The tests are modules of this package (cnp/plugin_tests/model.py, checkpoints.py, onnx.py),
added to the session's collection when their option is given, so they are ordinary
pytest tests: fixtures, `-k`, `-m cnp`, `-n` (pytest-xdist) and syrupy all apply.
"""

from __future__ import annotations

from pathlib import Path

import pytest

MODEL_TESTS = Path(__file__).parent / "plugin_tests" / "model.py"
CHECKPOINT_TESTS = Path(__file__).parent / "plugin_tests" / "checkpoints.py"
ONNX_TESTS = Path(__file__).parent / "plugin_tests" / "onnx.py"
SNAPSHOT_DIR_INI = "cnp_snapshot_dir"
DEFAULT_SNAPSHOT_DIR = "cnp_snapshots"
FACTORY = pytest.StashKey[object]()  # the callable --cnp-model names, imported once

# Failed snapshot comparisons show syrupy's diff only in rewritten modules.
pytest.register_assert_rewrite("cnp.plugin_tests")


def pytest_addoption(parser) -> None:
    group = parser.getgroup("cnp", "ConvNeXtPose verification (cnp)")
    group.addoption("--cnp-model", metavar="TARGET", default=None,
                    help="verify your implementation: FILE.py:NAME or MODULE:NAME, where NAME(variant) "
                         "returns an nn.Module for 'xs', 's', 'm', 'l' (importing it runs your code)")
    group.addoption("--cnp-checkpoints", metavar="DIR", default=None,
                    help="verify every checkpoint file in DIR: its label, and its tensors against "
                         "the snapshot `--snapshot-update` accepted")
    group.addoption("--cnp-onnx", metavar="PATH", default=None,
                    help="verify ONNX exports: an .onnx file or a folder of them (structure, variant, "
                         "upsampling, numerics with ONNX Runtime; needs cnp[onnx])")
    parser.addini(SNAPSHOT_DIR_INI, default=DEFAULT_SNAPSHOT_DIR,
                  help=f"cnp: checkpoint snapshots, relative to the rootdir (default {DEFAULT_SNAPSHOT_DIR})")


def refuse_parallel_snapshot_update(config) -> None:
    """Under pytest-xdist each worker sees only its share of the tests; snapshot tools have
    deleted or truncated the others' snapshots as "unused". Refuse rather than risk it."""
    workers = getattr(config.option, "numprocesses", None)
    if (config.getoption("update_snapshots", False) and workers not in (None, 0)
            and not hasattr(config, "workerinput")):
        raise pytest.UsageError(
            "--snapshot-update cannot run under pytest-xdist (-n): workers would each see "
            "part of the snapshots; run `pytest --snapshot-update` without -n")


def _refuse_rootdir_from_checkpoint_dir(config, directory: str) -> None:
    """pytest picks its rootdir (hence the ini file and where snapshots go) from the path
    arguments before any plugin's options are known: in `--cnp-checkpoints DIR` with DIR
    outside the current directory, DIR counts as such a path. `--cnp-checkpoints=DIR` does not."""
    args = list(config.invocation_params.args)
    spaced = any(a == "--cnp-checkpoints" and b == directory for a, b in zip(args, args[1:]))
    here = config.invocation_params.dir.resolve()
    if spaced and not Path(here, directory).resolve().is_relative_to(here):
        raise pytest.UsageError(
            f"--cnp-checkpoints {directory}: a folder outside the current directory must be given "
            f"as --cnp-checkpoints={directory}, or pytest takes its rootdir (and the place of the "
            "snapshots) from it")


def pytest_configure(config) -> None:
    target = config.getoption("cnp_model")
    directory = config.getoption("cnp_checkpoints")
    exports = config.getoption("cnp_onnx")
    if not (target or directory or exports):
        return
    config.addinivalue_line("markers", "cnp: a test added by cnp's plugin (--cnp-model, --cnp-checkpoints, --cnp-onnx)")
    if exports:
        from cnp.errors import InputError
        from cnp.onnx_check import onnx_cases, require

        try:
            require("onnx", "onnxruntime")
            onnx_cases(exports)
        except InputError as error:
            raise pytest.UsageError(f"--cnp-onnx {error}") from None
    if target:
        from cnp.errors import InputError
        from cnp.target import load_factory

        try:
            config.stash[FACTORY] = load_factory(target)
        except InputError as error:
            raise pytest.UsageError(f"--cnp-model {error}") from None
    if directory:
        if not Path(directory).is_dir():
            raise pytest.UsageError(f"--cnp-checkpoints {directory}: no such directory")
        _refuse_rootdir_from_checkpoint_dir(config, directory)
        if not config.pluginmanager.hasplugin("syrupy"):
            raise pytest.UsageError("--cnp-checkpoints needs syrupy: pip install 'cnp[test]'")
        refuse_parallel_snapshot_update(config)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """Add cnp's test modules to what the session collects, when their option is given."""
    report = yield
    if isinstance(collector, pytest.Session) and report.passed:
        asked = [(MODEL_TESTS, "cnp-model", collector.config.getoption("cnp_model")),
                 (CHECKPOINT_TESTS, "cnp-checkpoints", collector.config.getoption("cnp_checkpoints")),
                 (ONNX_TESTS, "cnp-onnx", collector.config.getoption("cnp_onnx"))]
        report.result.extend(pytest.Module.from_parent(collector, path=path, name=name, nodeid=name)
                             for path, name, option in asked if option)
    return report
