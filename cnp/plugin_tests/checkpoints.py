"""`pytest --cnp-checkpoints DIR`: each file in DIR holds what its name says, and its
tensors are what they were when `pytest --snapshot-update` last accepted them.

Collected by cnp's pytest plugin only when --cnp-checkpoints is given. The snapshots (one
JSON manifest per file: format, key layout, epoch, shape, dtype and sha256 of every tensor)
live in the repository being tested: `<rootdir>/cnp_snapshots/checkpoints/`, or
`checkpoints/` under the ini option `cnp_snapshot_dir`. Test ids are `<variant the name claims>-<file name>`, so `-k xs`
selects the files labeled XS.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

from cnp.checkpoints import inspect, manifest
from cnp.identify import case_id
from cnp.cli_checkpoints import report_text
from cnp.plugin import SNAPSHOT_DIR_INI

pytestmark = pytest.mark.cnp

_FLAT_LIST = re.compile(r"\[[^\[\]{}\"]*\]")


class ReadableJSONExtension(JSONSnapshotExtension):
    """JSON snapshots with lists of numbers (shapes, dims) on one line: a diff then shows
    one line per tensor or layer."""

    def serialize(self, data, **kwargs) -> str:
        text = super().serialize(data, **kwargs)
        return _FLAT_LIST.sub(lambda m: json.dumps(json.loads(m.group(0))), text)


class CheckpointSnapshots(ReadableJSONExtension):
    """Stored in the tested repository (rootdir, ini cnp_snapshot_dir, this module's name:
    syrupy relates snapshots to tests by it), not next to this module, which lives wherever
    cnp is installed."""

    @classmethod
    def dirname(cls, *, test_location) -> str:
        config = test_location.item.config
        return str(config.rootpath / config.getini(SNAPSHOT_DIR_INI) / test_location.basename)


def checkpoint_files(directory) -> list[Path]:
    # Folders too: an unzipped checkpoint (data.pkl, data/N) is one of the forms cnp reads.
    return sorted(p for p in Path(directory).iterdir() if not p.name.startswith("."))


def pytest_generate_tests(metafunc):
    if "checkpoint_file" in metafunc.fixturenames:
        files = checkpoint_files(metafunc.config.getoption("cnp_checkpoints"))
        metafunc.parametrize("checkpoint_file", [pytest.param(p, id=case_id(p)) for p in files])


def test_holds_what_its_name_says(checkpoint_file):
    report = inspect(checkpoint_file, fingerprints=True)
    assert report.match, report_text(report)


def test_manifest_unchanged(checkpoint_file, snapshot):
    assert manifest(checkpoint_file) == snapshot.use_extension(CheckpointSnapshots)
