"""Inspecting an L-sized checkpoint reads no tensor data: fast, and barely above the memory
of `import torch` alone. Measured in a fresh process (peak RSS is per process)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

MEASURE = Path(__file__).resolve().parent / "measure_inspect.py"


@pytest.fixture(scope="module")
def figures(released):
    run = subprocess.run([sys.executable, str(MEASURE), str(released["l"][0]), "--no-fingerprints"],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(run.stdout)


@pytest.mark.slow
def test_inspect_of_l_file_takes_under_0_3_s(figures):
    assert figures["file_mib"] > 30 and figures["variant"] == "l"
    assert figures["inspect_median_s"] < 0.3, figures


@pytest.mark.slow
def test_inspect_of_l_file_peaks_under_1_5_times_import_torch(figures):
    assert figures["inspect_peak_over_import_torch"] < 1.5, figures
    # The measure can fail: a plain load of the same file does exceed what inspect used.
    assert figures["peak_rss_after_plain_load_mib"] > figures["peak_rss_after_inspect_mib"] + 30, figures
