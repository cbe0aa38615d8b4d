"""Checkpoint files shared by the checkpoint tests: generated once per session, in tmp."""

import pytest

from cnp import VARIANTS
from checkpoint_files import POSITIONAL_HEAD_VARIANTS, TINY, save_official, seeded_model


@pytest.fixture(scope="session")
def released(tmp_path_factory):
    """variant → (file in the released form, the state_dict it was saved from)."""
    directory = tmp_path_factory.mktemp("released")
    files = {}
    for seed, variant in enumerate(VARIANTS):
        state = seeded_model(variant, seed).state_dict()
        path = save_official(state, directory / f"ConvNeXtPose_{variant.upper()}.tar",
                             positional_head=variant in POSITIONAL_HEAD_VARIANTS)
        files[variant] = (path, state)
    return files


@pytest.fixture(scope="session")
def tiny_state():
    return seeded_model(TINY).state_dict()
