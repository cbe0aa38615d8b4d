"""Checkpoint files shared by the checkpoint tests: generated once per session, in tmp."""

import pytest

from cnp import VARIANTS
from cnp.testing import seeded_model
from checkpoint_files import POSITIONAL_HEAD_VARIANTS, TINY, save_official


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


@pytest.fixture(scope="session")
def tiny_state():
    return seeded_model(TINY).state_dict()
