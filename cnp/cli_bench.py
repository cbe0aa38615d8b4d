"""`cnp bench`: throughput of the inference paths, measured interleaved in one process."""

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


def _print_bench(results: list[dict], machine: dict) -> None:
    rows = [["variant", "batch", "eager img/s", "fast img/s", "speed-up", "eager ms/img",
             "fast ms/img", "GFLOP/s eager", "GFLOP/s fast", "roofline eager", "roofline fast"]]
    rows += [[r["variant"], str(r["batch"]), f"{r['eager_img_s']:.1f}", f"{r['fast_img_s']:.1f}",
              f"{r['speedup']:.2f}x", f"{r['eager_ms_img']:.1f}", f"{r['fast_ms_img']:.1f}",
              f"{r['eager_gflops_s']:.1f}", f"{r['gflops_s']:.1f}",
              f"{r['eager_roofline_fraction']:.0%}", f"{r['roofline_fraction']:.0%}"]
             for r in results]
    print_columns(rows)
    first = results[0]
    print(f"\nmedians of {first['repeats']} interleaved runs per path; {machine['device']} "
          f"{machine['cpu']}, {machine['torch_threads']} torch threads, load average "
          f"{machine['load_average_1min']:.2f} at start"
          f"\nGFLOP/s = 2 x cnp MACs per image ({MAC_CONVENTION}) x img/s / 1e9;"
          "\n  the fast path runs fewer MACs than that (last 1x1 conv before the last"
          " upsampling), so its figure is an effective rate."
          f"\nroofline: fp32 torch.mm {first['roofline_gflops_s']:.1f} GFLOP/s, same process"
          " and threads; fraction = GFLOP/s / roofline.")


def cmd_bench(args) -> int:
    from cnp import bench

    specs = [get_spec(name) for name in (args.variants or list(VARIANTS))]
    _check_plot_target(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = bench.machine_info(args.device)
    total = len(specs) + 1
    _progress(1, total, f"fp32 matmul roofline on {args.device}")
    roofline = bench.matmul_roofline(repeats=max(args.repeats, 3), device=args.device)
    results = []
    for step, spec in enumerate(specs, start=2):
        _progress(step, total, f"{spec.name} batch {args.batch}: eager vs fast, "
                               f"{args.repeats} runs each")
        results.append(bench.bench_variant(spec.name, batch=args.batch, repeats=args.repeats,
                                     warmup=args.warmup, device=args.device,
                                     roofline_gflops_s=roofline).to_dict())
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
    bench = commands.add_parser("bench", help="eager vs fast throughput, GFLOP/s, roofline")
    bench.add_argument("variants", nargs="*", metavar="VARIANT",
                       help=f"any of {', '.join(VARIANTS)} (default: all)")
    bench.add_argument("--batch", type=positive_int, default=1, help="images per forward (1)")
    bench.add_argument("--repeats", type=positive_int, default=10,
                       help="timed runs per path; the median is reported (10)")
    bench.add_argument("--warmup", type=count, default=2, help="untimed runs first (2)")
    bench.add_argument("--threads", type=positive_int, default=None,
                       help="torch CPU threads (default: torch's, one per core)")
    bench.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bench.add_argument("--json", action="store_true",
                       help='{"results": [...], "machine": {...}} on stdout')
    bench.add_argument("--plot", type=Path, metavar="FILE.png",
                       help="draw the paper's MPJPE against measured img/s (needs matplotlib)")
    bench.add_argument("--force", action="store_true", help="let --plot overwrite FILE")
    bench.set_defaults(run=cmd_bench)
