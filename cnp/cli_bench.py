"""`cnp bench`: throughput of the inference backends, measured interleaved in one process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from cnp.analysis import MAC_CONVENTION
from cnp.cli import EXIT_OK, UsageError, count, positive_int, print_columns
from cnp.specs import VARIANTS, get_spec


def _progress(step: int, total: int, text: str) -> None:
    # A TTY gets one line rewritten in place; a log gets one line per step.
    if sys.stderr.isatty():
        end = "\n" if step == total else ""
        print(f"\r\033[Kcnp bench [{step}/{total}] {text}", end=end, file=sys.stderr, flush=True)
    else:
        print(f"cnp bench [{step}/{total}] {text}", file=sys.stderr, flush=True)


def _check_plot_target(args) -> None:
    """Fail before minutes of timing, not after: extra missing, bad name, file in the way."""
    if args.plot is None:
        return
    from cnp.plot import SUFFIXES, PlotUnavailable, require_matplotlib

    try:
        require_matplotlib()
    except PlotUnavailable as error:
        raise UsageError(str(error)) from None
    if args.plot.suffix.lower() not in SUFFIXES:
        raise UsageError(f"--plot {args.plot}: the file name must end in {', '.join(SUFFIXES)}")
    if args.plot.exists() and not args.force:
        raise UsageError(f"--plot {args.plot}: file exists; pass --force to overwrite it")
    if not args.plot.parent.is_dir():
        raise UsageError(f"--plot {args.plot}: no such directory {args.plot.parent}")


# Printed under the table: how it was measured and what each column means.
BENCH_NOTES = """
medians of {repeats} interleaved runs per backend; {device} {cpu}, {threads} torch threads \
(ONNX Runtime: as many intra-op threads, no spinning), load average {load:.2f} at start
vs X: the median over rounds of X's time / this backend's time in the same round \
(above 1: faster than X).
setup s: building the backend from the eager model (rewrite, export, session), timed once, \
not in ms/img.
GFLOP/s = 2 x cnp MACs per image ({convention}) x img/s / 1e9;
  the fast path runs fewer MACs than that (last 1x1 conv before the last upsampling), \
so its figure is an effective rate.
roofline: fp32 torch.mm {roofline:.1f} GFLOP/s, same process and threads; \
fraction = GFLOP/s / roofline."""


def _print_bench(results: list[dict], machine: dict) -> None:
    names = list(results[0]["backends"])
    rows = [["variant", "batch", "backend", "engine", "ms/img", "img/s", "GFLOP/s", "roofline",
             "setup s"] + [f"vs {name}" for name in names]]
    for r in results:
        for name, b in r["backends"].items():
            rows.append([r["variant"], str(r["batch"]), name, b["engine"], f"{b['ms_img']:.1f}",
                         f"{b['img_s']:.1f}", f"{b['gflops_s']:.1f}",
                         f"{b['roofline_fraction']:.0%}", f"{b['setup_s']:.2f}"]
                        + [f"{b['speedup_over'][other]:.2f}x" if other != name else "-"
                           for other in names])
    print_columns(rows)
    first = results[0]
    print(BENCH_NOTES.format(
        repeats=first["repeats"], device=machine["device"], cpu=machine["cpu"],
        threads=machine["torch_threads"], load=machine["load_average_1min"],
        convention=MAC_CONVENTION, roofline=first["roofline_gflops_s"]))


def _backends(args) -> tuple[str, ...]:
    """The --backend list, checked before any timing: unknown, repeated, not installed."""
    from cnp.bench import require_backends

    names = tuple(name.strip() for name in args.backend.split(","))
    if len(set(names)) != len(names):
        raise UsageError(f"--backend {args.backend}: a backend is named twice")
    require_backends(names)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device cuda: this torch ({torch.__version__}) sees no CUDA device")
    if args.device != "cpu" and any(b in ("onnxruntime",) for b in names):
        raise UsageError(f"--backend onnxruntime runs on the CPU only, not --device {args.device}")
    if args.plot is not None and not {"eager", "fast"} <= set(names):
        raise UsageError("--plot draws eager against fast: --backend must include both")
    return names


def cmd_bench(args) -> int:
    from cnp import bench

    specs = [get_spec(name) for name in (args.variants or list(VARIANTS))]
    backends = _backends(args)
    _check_plot_target(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = bench.machine_info(args.device)
    total = len(specs) + 1
    _progress(1, total, f"fp32 matmul roofline on {args.device}")
    roofline = bench.matmul_roofline(repeats=max(args.repeats, 3), device=args.device)
    results = []
    for step, spec in enumerate(specs, start=2):
        _progress(step, total, f"{spec.name} batch {args.batch}: {', '.join(backends)}, "
                               f"{args.repeats} runs each")
        results.append(bench.bench_variant(
            spec.name, backends=backends, batch=args.batch, repeats=args.repeats,
            warmup=args.warmup, device=args.device, roofline_gflops_s=roofline).to_dict())
    if args.json:
        print(json.dumps({"results": results, "machine": machine}, indent=2))
    else:
        _print_bench(results, machine)
    if args.plot is not None:
        from cnp.plot import plot_mpjpe_vs_throughput

        plot_mpjpe_vs_throughput(results, machine, args.plot)
        print(f"cnp bench: wrote {args.plot}", file=sys.stderr)
    return EXIT_OK


def register(commands) -> None:
    bench = commands.add_parser("bench", help="throughput of eager, fast, ONNX Runtime side by "
                                              "side; GFLOP/s, roofline")
    bench.add_argument("variants", nargs="*", metavar="VARIANT",
                       help=f"any of {', '.join(VARIANTS)} (default: all)")
    bench.add_argument("--backend", default="eager,fast", metavar="NAME[,NAME...]",
                       help="backends to time, interleaved: eager, fast, fast-torch, "
                            "onnxruntime (default: eager,fast)")
    bench.add_argument("--batch", type=positive_int, default=1, help="images per forward (1)")
    bench.add_argument("--repeats", type=positive_int, default=10,
                       help="timed runs per path; the median is reported (10)")
    bench.add_argument("--warmup", type=count, default=2, help="untimed runs first (2)")
    bench.add_argument("--threads", type=positive_int, default=None,
                       help="torch CPU threads (default: torch's, one per core)")
    bench.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                       help="the device to time on (cpu); onnxruntime runs on the CPU only")
    bench.add_argument("--json", action="store_true",
                       help='{"results": [...], "machine": {...}} on stdout')
    bench.add_argument("--plot", type=Path, metavar="FILE.png",
                       help="draw the paper's MPJPE against measured img/s (needs matplotlib)")
    bench.add_argument("--force", action="store_true", help="let --plot overwrite FILE")
    bench.set_defaults(run=cmd_bench)
