"""`pytest -k xs` selects the XS cases and nothing else.

An XS case names XS as a word of its id: a parameter (`test_head_upsampling[xs]`,
`test_throughput[xs-batch1-fast]`) or the test's name (`test_file_labeled_xs_...`).
What this guards against: a test whose name merely contains the letters ("maxs", "idxs").
"""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
XS_WORD = re.compile(r"(?<![a-z])xs(?![a-z])", re.IGNORECASE)


def collected(pytester, *args: str) -> set[str]:
    # In-process: the test modules are already imported, so collecting costs ~0.3 s.
    # pytester drops the modules an in-process run imported; a C extension imported again
    # aborts the process (onnx's does). Some test modules import onnx when collected: keep
    # it imported across the runs.
    if importlib.util.find_spec("onnx") is not None:
        import onnx  # noqa: F401
    result = pytester.runpytest_inprocess("--collect-only", "-q", "-p", "no:cacheprovider",
                                          f"--rootdir={ROOT}", str(ROOT / "tests"), *args)
    return {line for line in result.outlines if "::" in line}


def is_xs_case(node_id: str) -> bool:
    module, _, test = node_id.partition("::")
    return not XS_WORD.search(module) and bool(XS_WORD.search(test))


def test_dash_k_selects_only_the_variant_cases(pytester):
    everything = collected(pytester)
    selected = collected(pytester, "-k", "xs")
    assert selected
    assert {n for n in selected if not is_xs_case(n)} == set()
    assert selected == {n for n in everything if is_xs_case(n)}
    assert sum("[xs]" in n for n in selected) >= 10  # the per-variant core checks
