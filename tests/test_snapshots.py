"""Any architecture change fails here until `pytest --snapshot-update` accepts it."""

from pathlib import Path

import pytest

from cnp import VARIANTS, summarize

ROOT_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_summary_snapshot(variant, snapshot_json):
    assert summarize(variant).to_dict() == snapshot_json


GATED_TEST = '''
import dataclasses
import pytest
from cnp import VARIANTS, summarize
from cnp.specs import HeadLayerSpec

UPSAMPLE_LAST = {upsample_last}

@pytest.mark.parametrize("variant", ["s"])
def test_summary(variant, snapshot_json):
    spec = VARIANTS[variant]
    head = spec.head[:2] + (dataclasses.replace(spec.head[2], upsample=UPSAMPLE_LAST),)
    assert summarize(dataclasses.replace(spec, head=head)).to_dict() == snapshot_json
'''


def test_snapshot_gate_catches_change_and_staleness(pytester):
    """Record, change the architecture (S becomes 3UP), fail, accept, then go stale."""
    pytester.makeconftest(ROOT_CONFTEST.read_text())
    pytester.makepyfile(test_gate=GATED_TEST.format(upsample_last=1))
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=1)
    assert (pytester.path / "fixtures" / "test_gate" / "test_summary[s].json").is_file()
    pytester.runpytest().assert_outcomes(passed=1)

    pytester.makepyfile(test_gate=GATED_TEST.format(upsample_last=2))
    changed = pytester.runpytest()
    changed.assert_outcomes(failed=1)
    assert '"upsample": 2' in changed.stdout.str()
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=1)
    pytester.runpytest().assert_outcomes(passed=1)

    pytester.makepyfile(test_gate=GATED_TEST.replace('["s"]', '["m"]').format(upsample_last=2))
    stale = pytester.runpytest()
    assert stale.ret == 1
    stale.stdout.fnmatch_lines(["*1 snapshot unused*"])
