"""Inspecting an L-sized checkpoint reads no tensor data: fast, and barely above the memory
of `import torch` alone, whether the file is zipped or unzipped into a folder. Measured in a
fresh process (peak RSS is per process)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from checkpoint_files import unzipped

MEASURE = Path(__file__).resolve().parent / "measure_inspect.py"


def _measure(*args) -> dict:
    run = subprocess.run([sys.executable, str(MEASURE), *map(str, args)],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(run.stdout)


@pytest.fixture(scope="module")
def figures(released):
    return _measure(released["l"][0], "--no-fingerprints")


@pytest.fixture(scope="module")
def folder_figures(released, tmp_path_factory):
    """The L file as users "extract" it: ConvNeXtPose_L/snapshot_83.pth/{data.pkl,data/...}."""
    folder = tmp_path_factory.mktemp("unzipped") / "ConvNeXtPose_L"
    unzipped(released["l"][0], folder)
    return _measure(folder)


@pytest.mark.slow
def test_inspect_of_l_file_takes_under_0_3_s(figures):
    assert figures["file_mib"] > 30 and figures["variant"] == "l"
    assert figures["inspect_median_s"] < 0.3, figures


@pytest.mark.slow
def test_inspect_of_l_file_peaks_under_1_5_times_import_torch(figures):
    assert figures["inspect_peak_over_import_torch"] < 1.5, figures
    # The measure can fail: a plain load of the same file does exceed what inspect used.
    assert figures["peak_rss_after_plain_load_mib"] > figures["peak_rss_after_inspect_mib"] + 30, figures


@pytest.mark.slow
def test_inspect_of_unzipped_l_folder_peaks_under_1_5_times_import_torch(folder_figures):
    assert (folder_figures["form"], folder_figures["variant"]) == ("torch-folder", "l")
    assert folder_figures["inspect_peak_over_import_torch"] < 1.5, folder_figures
    # The measure can fail: reading every byte (fingerprints) does show in the peak.
    assert folder_figures["peak_rss_after_fingerprints_mib"] > \
        folder_figures["peak_rss_after_inspect_mib"] + 25, folder_figures
