"""`pytest --cnp-onnx PATH`: the `cnp check-onnx` checks of each .onnx file (PATH, or every
.onnx file in the folder PATH) as tests, one per file and check:
`test_export[xs-pose_xs.onnx-numerics]`; `-k xs` runs the files labelled XS.

Collected by cnp's pytest plugin only when --cnp-onnx is given. Each file is checked once,
by the first of its tests that runs. A check that could not be made (numerics without a
source of weights) skips with its reason: never a pass.
"""

from __future__ import annotations

import json

import pytest

from cnp.errors import InputError
from cnp.onnx_check import CHECKS, onnx_cases, report

pytestmark = pytest.mark.cnp


class Reports(dict):
    """file → OnnxReport (or the InputError reading it raised), made on first use."""

    def __missing__(self, path):
        try:
            self[path] = report(path)
        except InputError as error:
            self[path] = error
        return self[path]


@pytest.fixture(scope="session")
def cnp_onnx_reports() -> Reports:
    return Reports()


def pytest_generate_tests(metafunc):
    if "onnx_file" in metafunc.fixturenames:
        cases = onnx_cases(metafunc.config.getoption("cnp_onnx"))
        metafunc.parametrize("onnx_file, name", [pytest.param(path, name, id=f"{case}-{name}")
                                                 for case, path in cases for name in CHECKS])


def test_export(cnp_onnx_reports, onnx_file, name):
    found = cnp_onnx_reports[onnx_file]
    if isinstance(found, InputError):
        pytest.fail(str(found), pytrace=False)
    check = next((c for c in found.checks if c.check == name), None)
    if check is None:
        pytest.fail(f"{onnx_file}: no {name} check in the report", pytrace=False)
    if check.ok is None:
        pytest.skip(f"{name} not checked: {check.detail}")
    if not check.ok:
        pytest.fail(f"{onnx_file}: {name}: {check.detail}\nexpected {json.dumps(check.expected, default=str)}"
                    f"\nfound    {json.dumps(check.found, default=str)}", pytrace=False)
