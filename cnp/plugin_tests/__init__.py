"""The test modules cnp's pytest plugin adds to a session: `model` for --cnp-model,
`checkpoints` for --cnp-checkpoints. Their checkpoint snapshots live in the tested
repository under `<cnp_snapshot_dir>/checkpoints/` (syrupy files snapshots by module name)."""
