"""Measure `cnp check FILE.py:build --variant xs` from fresh processes, as a user runs it,
interleaved with a bare `import torch` (which no cnp change can make faster):

    python tests/measure_check.py            # 3 rounds; prints JSON
    python tests/measure_check.py --rounds 5

The implementation checked is the tests' official-style XS (tests/implementations.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from implementations import IMPLEMENTATIONS  # noqa: E402


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as directory:
        target = Path(directory) / "official.py"
        target.write_text(IMPLEMENTATIONS["official"])
        check = [sys.executable, "-m", "cnp.cli", "check", f"{target}:build", "--variant", "xs"]
        torch_only = [sys.executable, "-c", "import torch"]
        checks, imports = [], []
        for _ in range(rounds):  # interleaved: both see the same machine load
            checks.append(wall(check))
            imports.append(wall(torch_only))
    print(json.dumps({
        "cnp_check_xs_s": [round(t, 2) for t in checks],
        "import_torch_s": [round(t, 2) for t in imports],
        "cnp_check_xs_median_s": round(statistics.median(checks), 2),
        "import_torch_median_s": round(statistics.median(imports), 2),
        "beyond_import_torch_median_s": round(statistics.median(
            c - i for c, i in zip(checks, imports)), 2),
    }, indent=2))


if __name__ == "__main__":
    main()
