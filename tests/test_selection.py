"""`pytest -k xs` selects the XS cases and nothing else."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Both collections in one child process: torch is imported once.
COLLECT_TWICE = """
import pytest
pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider"])
print("=== -k xs")
pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-k", "xs"])
"""


def test_dash_k_selects_only_the_variant_cases():
    result = subprocess.run([sys.executable, "-c", COLLECT_TWICE], cwd=ROOT,
                            capture_output=True, text=True)
    everything, _, selected = result.stdout.partition("=== -k xs")
    everything = {line for line in everything.splitlines() if "::" in line}
    selected = {line for line in selected.splitlines() if "::" in line}
    assert selected, result.stdout + result.stderr
    assert {n for n in selected if "[xs" not in n} == set()
    assert selected == {n for n in everything if "[xs" in n}
