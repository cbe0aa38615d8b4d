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


def write_gated_test(pytester, upsample_last: int, variant: str = "s") -> None:
    source = GATED_TEST.format(upsample_last=upsample_last)
    pytester.makepyfile(test_gate=source.replace('["s"]', f'["{variant}"]'))


@pytest.fixture
def recorded(pytester):
    """A nested project whose one snapshot (S's summary, 2UP) was just recorded."""
    pytester.makeconftest(ROOT_CONFTEST.read_text())
    write_gated_test(pytester, upsample_last=1)
    return pytester.runpytest("--snapshot-update")


def test_snapshot_gate_records_a_new_snapshot(recorded, pytester):
    recorded.assert_outcomes(passed=1)
    stored = pytester.path / "fixtures" / "test_gate" / "test_summary[s].json"
    assert '"upsample": 1' in stored.read_text()


def test_snapshot_gate_passes_an_unchanged_architecture(recorded, pytester):
    pytester.runpytest().assert_outcomes(passed=1)


def test_snapshot_gate_fails_a_change_and_shows_it(recorded, pytester):
    write_gated_test(pytester, upsample_last=2)  # S becomes 3UP
    changed = pytester.runpytest()
    changed.assert_outcomes(failed=1)
    assert '"upsample": 2' in changed.stdout.str()


def test_snapshot_gate_update_accepts_a_change(recorded, pytester):
    write_gated_test(pytester, upsample_last=2)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=1)
    pytester.runpytest().assert_outcomes(passed=1)


def test_snapshot_gate_reports_a_stale_snapshot(recorded, pytester):
    write_gated_test(pytester, upsample_last=1, variant="m")  # S's test is gone
    stale = pytester.runpytest()
    assert stale.ret == 1
    stale.stdout.fnmatch_lines(["*1 snapshot unused*"])
