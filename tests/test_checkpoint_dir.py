"""The checkpoint files in `--checkpoint-dir DIR`: each holds what its name says, and its
tensors are what they were when `pytest --snapshot-update` last accepted them."""

from cnp.checkpoints import inspect, manifest


def test_holds_what_its_name_says(checkpoint_file):
    report = inspect(checkpoint_file, fingerprints=True)
    assert report.match, [d.to_dict() for d in report.differences]


def test_manifest_unchanged(checkpoint_file, snapshot_json):
    assert manifest(checkpoint_file) == snapshot_json
