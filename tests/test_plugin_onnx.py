"""`pytest --cnp-onnx PATH` refuses what it cannot check before any test runs: a usage
error (exit 4) naming the option and the problem. (tests/test_onnx.py runs the option on a
folder of real exports.)"""

from __future__ import annotations

import pytest


def _run(pytester, *args):
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_cnp_onnx_names_a_path_that_does_not_exist(pytester):
    result = _run(pytester, "--cnp-onnx=missing.onnx")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--cnp-onnx missing.onnx: no such file or directory*"])


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_cnp_onnx_names_the_missing_module_of_the_extra(missing, pytester, uninstalled):
    uninstalled(missing)
    pytester.makefile(".onnx", model="")
    result = _run(pytester, "--cnp-onnx=model.onnx")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--cnp-onnx {missing}: not installed" in result.stderr.str()
    assert "pip install 'cnp[onnx]'" in result.stderr.str()

