"""`pytest -k xs` selects the XS cases and nothing else.

An XS case names XS as a word of its id: a parameter (`test_head_upsampling[xs]`,
`test_throughput[xs-batch1-fast]`) or the test's name (`test_file_labeled_xs_...`).
What this guards against: a test whose name merely contains the letters ("maxs", "idxs").
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
XS_WORD = re.compile(r"(?<![a-z])xs(?![a-z])", re.IGNORECASE)

# Both collections in one child process: torch is imported once.
COLLECT_TWICE = """
import pytest
pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider"])
print("=== -k xs")
pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-k", "xs"])
"""


def is_xs_case(node_id: str) -> bool:
    module, _, test = node_id.partition("::")
    return not XS_WORD.search(module) and bool(XS_WORD.search(test))


def test_dash_k_selects_only_the_variant_cases():
    result = subprocess.run([sys.executable, "-c", COLLECT_TWICE], cwd=ROOT,
                            capture_output=True, text=True)
    everything, _, selected = result.stdout.partition("=== -k xs")
    everything = {line for line in everything.splitlines() if "::" in line}
    selected = {line for line in selected.splitlines() if "::" in line}
    assert selected, result.stdout + result.stderr
    assert {n for n in selected if not is_xs_case(n)} == set()
    assert selected == {n for n in everything if is_xs_case(n)}
    assert sum("[xs]" in n for n in selected) >= 10  # the per-variant core checks
