"""Measure `cnp.inspect` on a checkpoint: time in-process and peak memory, against plain
`torch.load` + `load_state_dict` (for a file; torch.load cannot read an unzipped folder).
Run in a fresh process, since peak RSS is per process:

    python tests/measure_inspect.py --write-l /tmp/ConvNeXtPose_L.tar   # a synthetic L file
    python tests/measure_inspect.py /tmp/ConvNeXtPose_L.tar             # prints JSON
    python tests/measure_inspect.py /tmp/ConvNeXtPose_L.tar --no-fingerprints
    python tests/measure_inspect.py --unzip /tmp/ConvNeXtPose_L.tar /tmp/ConvNeXtPose_L  # as users "extract" it
    python tests/measure_inspect.py /tmp/ConvNeXtPose_L                 # the folder (snapshot_83.pth one level down)
    python tests/measure_inspect.py --compare /tmp/ConvNeXtPose_L.tar /tmp/ConvNeXtPose_L  # interleaved times
"""

from __future__ import annotations

import hashlib
import json
import resource
import statistics
import sys
import time
from pathlib import Path


def peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM, since ru_maxrss carries over the peak of
    the parent that forked us (pytest, holding checkpoints) across exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def median_seconds(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(path: str, repeat: int = 3, fingerprints: bool = True) -> dict:
    import torch  # noqa: F401 - the baseline: what `import torch` alone costs

    after_import_torch = peak_rss_mib()
    from cnp.checkpoints import inspect

    start = time.perf_counter()
    report = inspect(path)
    first = time.perf_counter() - start
    inspect_s = median_seconds(lambda: inspect(path), repeat)
    after_inspect = peak_rss_mib()
    figures = {
        "file_mib": round(size_mib(Path(path)), 1),
        "form": report.format,
        "variant": report.matched_variant,
        "inspect_first_s": round(first, 4),
        "inspect_median_s": round(inspect_s, 4),
        "peak_rss_import_torch_mib": round(after_import_torch, 1),
        "peak_rss_after_inspect_mib": round(after_inspect, 1),
        "inspect_peak_over_import_torch": round(after_inspect / after_import_torch, 3),
    }
    if Path(path).is_file():
        figures.update(plain_load_figures(path, report.matched_variant, inspect_s, repeat))
    if fingerprints:  # bounded by hashing the bytes once: compare with one sha256 of the file
        figures["inspect_fingerprints_median_s"] = round(
            median_seconds(lambda: inspect(path, fingerprints=True), repeat), 4)
        # Reading every byte does show in the peak: the measure can see data being read.
        figures["peak_rss_after_fingerprints_mib"] = round(peak_rss_mib(), 1)
        if Path(path).is_file():
            figures["sha256_of_whole_file_median_s"] = round(median_seconds(
                lambda: hashlib.sha256(Path(path).read_bytes()).hexdigest(), repeat), 4)
    return figures


def compare(first: str, second: str, repeat: int = 15) -> dict:
    """`inspect` of two forms of one checkpoint, interleaved in this process: medians and
    the median of the per-round ratios (robust to a machine whose load drifts)."""
    from cnp.checkpoints import inspect

    times: dict[str, list[float]] = {first: [], second: []}
    for path in times:
        inspect(path)  # first calls pay for imports and caches
    for _ in range(repeat):
        for path, taken in times.items():
            start = time.perf_counter()
            inspect(path)
            taken.append(time.perf_counter() - start)
    ratios = [b / a for a, b in zip(times[first], times[second])]
    return {"first": first, "second": second, "repeat": repeat,
            "first_median_s": round(statistics.median(times[first]), 4),
            "second_median_s": round(statistics.median(times[second]), 4),
            "second_over_first_median_ratio": round(statistics.median(ratios), 3)}


def size_mib(path: Path) -> float:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return sum(p.stat().st_size for p in files) / 2**20


def plain_load_figures(path: str, variant: str, inspect_s: float, repeat: int) -> dict:
    import torch  # noqa: F401 - the baseline: what `import torch` alone costs
    from cnp import build
    from cnp.checkpoints import read

    model = build(variant)
    names = list(read(path).table)  # official names, in the file's order

    def plain_load():
        stored = torch.load(path, map_location="cpu", weights_only=True)["network"]
        model.load_state_dict(dict(zip(names, stored.values())), strict=True)

    start = time.perf_counter()
    plain_load()
    plain_first = time.perf_counter() - start
    plain_s = median_seconds(plain_load, repeat)
    return {
        "plain_load_first_s": round(plain_first, 4),
        "plain_load_median_s": round(plain_s, 4),
        "inspect_over_plain_load": round(inspect_s / plain_s, 3),
        "peak_rss_after_plain_load_mib": round(peak_rss_mib(), 1),
    }


def write_l(path: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from checkpoint_files import save_official
    from cnp.testing import seeded_model

    save_official(seeded_model("l").state_dict(), Path(path), positional_head=True)


if __name__ == "__main__":
    if sys.argv[1] == "--write-l":
        write_l(sys.argv[2])
    elif sys.argv[1] == "--compare":
        print(json.dumps(compare(sys.argv[2], sys.argv[3]), indent=2))
    elif sys.argv[1] == "--unzip":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from checkpoint_files import unzipped

        unzipped(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        print(json.dumps(measure(sys.argv[1], fingerprints="--no-fingerprints" not in sys.argv), indent=2))
