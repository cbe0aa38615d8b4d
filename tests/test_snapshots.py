"""Any architecture change fails here until `pytest --snapshot-update` accepts it."""

import pytest

from cnp import VARIANTS, summarize


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_summary_snapshot(variant, snapshot_json):
    assert summarize(variant).to_dict() == snapshot_json
