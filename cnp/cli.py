"""The `cnp` command line.

Exit codes (documented in the README):
  0  everything compared matches
  1  a compared cell (or a checked file) does not match
  2  usage error or unreadable input: one line on stderr, no traceback
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cnp import checkpoints
from cnp.analysis import MAC_CONVENTION, Summary, compare, millions, summarize
from cnp.specs import PAPER, VARIANTS, UnknownVariantError, get_spec

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage block; users asked for one line they can read.
    def error(self, message: str) -> None:
        raise UsageError(message)


def _dims(values) -> str:
    return ",".join(str(v) for v in values)


def _table_row(summary: Summary) -> dict:
    spec = get_spec(summary.variant)
    checks = compare(spec, summary)
    paper = PAPER[spec.name]
    return {
        "variant": summary.variant,
        "backbone": summary.backbone,
        "depths": [s.blocks for s in summary.stages],
        "dims": [s.dim for s in summary.stages],
        "head_channels": [h.out_channels for h in summary.head_layers],
        "head_kernels": [h.kernel for h in summary.head_layers],
        "head_upsample": list(summary.head_upsample),
        "depth_dim": summary.volume_shape[1],
        "joint_num": summary.volume_shape[0],
        "heatmap_shape": list(summary.heatmap_shape),
        "params": summary.params,
        "state_dict_numel": summary.state_dict_numel,
        "batchnorm_buffer_numel": summary.batchnorm_buffer_numel,
        "state_dict_keys": summary.keys.total,
        "macs": summary.macs.total,
        "gmacs": round(summary.macs.total / 1e9, 4),
        "gmacs_conv_weights_only": round(summary.macs.conv_weights / 1e9, 4),
        "gmacs_all_elementwise": round(summary.macs.all_elementwise / 1e9, 4),
        "mac_convention": MAC_CONVENTION,
        "paper": None if paper is None else {
            "params_m": paper.params_m,
            "gflops": paper.gflops,
            "mpjpe": paper.mpjpe,
            "pa_mpjpe": paper.pa_mpjpe,
            "other_documents_params_m": paper.other_params_m,
        },
        "checks": [check.to_dict() for check in checks],
        "ok": all(c.ok for c in checks),
    }


def _verdict(row: dict, field: str) -> str:
    for check in row["checks"]:
        if check["check"] == field:
            return "ok" if check["ok"] else "MISMATCH"
    return ""


def _print_columns(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _print_table(rows: list[dict]) -> None:
    lines = [["variant", "backbone", "depths", "dims", "head", "upsample", "depth_dim",
              "heatmap", "params M (paper)", "state_dict M (quoted)", "GMACs (paper GFLOPs)",
              "MPJPE", "PA-MPJPE"]]
    for row in rows:
        paper = row["paper"]
        gmacs_delta = (row["gmacs"] / paper["gflops"] - 1) * 100
        quoted = paper["other_documents_params_m"]
        lines.append([
            row["variant"],
            row["backbone"],
            _dims(row["depths"]),
            _dims(row["dims"]),
            _dims(sorted(set(row["head_channels"]))),
            _dims(row["head_upsample"]) + " " + _verdict(row, "head.upsample"),
            str(row["depth_dim"]),
            "x".join(str(v) for v in row["heatmap_shape"][1:]) + " " + _verdict(row, "heatmap_shape"),
            f"{millions(row['params']):.2f} ({paper['params_m']:.2f}) {_verdict(row, 'params_m')}",
            f"{millions(row['state_dict_numel']):.2f} "
            + (f"({quoted:.2f}) {_verdict(row, 'state_dict_m')}" if quoted else "(-)"),
            f"{row['gmacs']:.3f} ({paper['gflops']:.2f}, {gmacs_delta:+.1f}%) "
            + _verdict(row, "gflops"),
            f"{paper['mpjpe']:.2f}",
            "-" if paper["pa_mpjpe"] is None else f"{paper['pa_mpjpe']:.1f}",
        ])
    print("ConvNeXtPose variants built by cnp (meta device, 3x256x256 input) vs the paper\n")
    _print_columns(lines)
    def other_convention(field: str) -> str:
        return ", ".join(f"{r['variant']} {r[field]:.3f} "
                         f"({(r[field] / r['paper']['gflops'] - 1) * 100:+.1f}%)" for r in rows)
    print(
        "\nparams: trainable parameters, the paper's definition. state_dict: every state_dict"
        "\n  element, i.e. params + BatchNorm running_mean/running_var (C each) +"
        "\n  num_batches_tracked (1) per BatchNorm: the figure other documents quote."
        f"\nGMACs: {MAC_CONVENTION}."
        "\n  Conv weights alone (torch.utils.flop_counter, torchprofile):"
        f"\n    {other_convention('gmacs_conv_weights_only')}"
        "\n  One per element also for BatchNorm, ReLU, upsampling and residual adds:"
        f"\n    {other_convention('gmacs_all_elementwise')}"
        "\nMPJPE / PA-MPJPE (mm, Human3.6M): the paper's; not computed here."
    )
    failed = [f"{r['variant']}:{c['check']}" for r in rows for c in r["checks"] if not c["ok"]]
    total = sum(len(r["checks"]) for r in rows)
    if failed:
        print(f"\nverdict: {len(failed)} of {total} compared cells differ: {', '.join(failed)}")
    else:
        print(f"\nverdict: all {total} compared cells match")


def cmd_table(args) -> int:
    rows = [_table_row(summarize(name)) for name in VARIANTS]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    return EXIT_OK if all(row["ok"] for row in rows) else EXIT_MISMATCH


def _shape(shape) -> str:
    return "x".join(str(v) for v in shape)


def cmd_summary(args) -> int:
    spec = get_spec(args.variant)
    summary = summarize(spec)
    checks = compare(spec, summary)
    if args.json:
        data = summary.to_dict()
        data["checks"] = [check.to_dict() for check in checks]
        print(json.dumps(data, indent=2))
    else:
        rows = [["layer", "kind", "in", "out", "params", "MACs"]]
        rows += [[r.name, r.kind, _shape(r.in_shape), _shape(r.out_shape), f"{r.params:,}",
                  f"{r.macs:,}"] for r in summary.layers]
        print(f"ConvNeXtPose-{spec.name.upper()}: {summary.backbone} backbone "
              f"{_dims(spec.backbone.depths)} / {_dims(spec.backbone.dims)}, head "
              f"{_dims(h.out_channels for h in summary.head_layers)} upsampling "
              f"{_dims(summary.head_upsample)}\n")
        _print_columns(rows)
        print(f"\nparams {summary.params:,} (paper {PAPER[spec.name].params_m}M); state_dict elements "
              f"{summary.state_dict_numel:,} ({summary.keys.total} keys: "
              f"{summary.keys.params} parameters, {summary.keys.buffers} buffers)")
        print(f"MACs {summary.macs.total:,} ({MAC_CONVENTION}); paper {PAPER[spec.name].gflops} GFLOPs")
        print(f"heatmaps {_shape(summary.heatmap_shape)} = volumes {_shape(summary.volume_shape)}"
              f" -> coordinates {_shape(summary.coords_shape)}")
        for check in checks:
            if not check.ok:
                print(f"MISMATCH {check.check}: expected {check.expected} ({check.source}), "
                      f"found {check.found}")
    return EXIT_OK if all(c.ok for c in checks) else EXIT_MISMATCH


def _positive_int(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


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
    _print_columns(rows)
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


def cmd_inspect(args) -> int:
    if args.expect:
        get_spec(args.expect)  # an unknown name is a usage error before any file is read
    status, rows = EXIT_OK, []
    for path in args.paths:
        try:
            report = checkpoints.inspect(path, args.expect, joint_num=args.joints,
                                         fingerprints=args.fingerprints)
        except checkpoints.CheckpointError as error:
            print(f"cnp: error: {error}", file=sys.stderr)
            rows.append({"path": path, "error": error.problem})
            status = EXIT_USAGE
            continue
        rows.append(report.to_dict())
        if not args.json:
            print(report.text())
        if not report.match:
            status = max(status, EXIT_MISMATCH)
    if args.json:
        print(json.dumps(rows, indent=2))
    return status


def cmd_convert(args) -> int:
    target = checkpoints.convert(args.source, args.target, force=args.force,
                                 joint_num=args.joints)
    print(f"wrote {target}")
    return EXIT_OK


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnp", description="Verify the ConvNeXtPose architecture.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    table = commands.add_parser("table", help="every variant side by side with the paper")
    table.add_argument("--json", action="store_true", help="a JSON list, one object per variant")
    table.set_defaults(run=cmd_table)

    summary = commands.add_parser("summary", help="one variant layer by layer")
    summary.add_argument("variant", help=f"one of {', '.join(VARIANTS)}")
    summary.add_argument("--json", action="store_true", help="the whole summary as JSON")
    summary.set_defaults(run=cmd_summary)

    bench = commands.add_parser("bench", help="eager vs fast throughput, GFLOP/s, roofline")
    bench.add_argument("variants", nargs="*", metavar="VARIANT",
                       help=f"any of {', '.join(VARIANTS)} (default: all)")
    bench.add_argument("--batch", type=_positive_int, default=1, help="images per forward (1)")
    bench.add_argument("--repeats", type=_positive_int, default=10,
                       help="timed runs per path; the median is reported (10)")
    bench.add_argument("--warmup", type=_count, default=2, help="untimed runs first (2)")
    bench.add_argument("--threads", type=_positive_int, default=None,
                       help="torch CPU threads (default: torch's, one per core)")
    bench.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bench.add_argument("--json", action="store_true",
                       help='{"results": [...], "machine": {...}} on stdout')
    bench.add_argument("--plot", type=Path, metavar="FILE.png",
                       help="draw the paper's MPJPE against measured img/s (needs matplotlib)")
    bench.add_argument("--force", action="store_true", help="let --plot overwrite FILE")
    bench.set_defaults(run=cmd_bench)

    inspect = commands.add_parser("inspect", help="what checkpoint files hold, from their tensors")
    inspect.add_argument("paths", nargs="+", metavar="PATH")
    inspect.add_argument("--expect", metavar="V",
                         help="the variant the files should hold (default: the one the file name names)")
    inspect.add_argument("--joints", type=_positive_int, default=checkpoints.DEFAULT_JOINTS, metavar="N",
                         help="joint_num, to split the final layer into joints x depth (default 18)")
    inspect.add_argument("--fingerprints", action="store_true",
                         help="read every tensor once: sha256 per tensor, NaN/Inf reported")
    inspect.add_argument("--json", action="store_true", help="a JSON list, one object per file")
    inspect.set_defaults(run=cmd_inspect)

    convert = commands.add_parser("convert", help="write a normalized state_dict (.safetensors or .pth)")
    convert.add_argument("source", metavar="IN")
    convert.add_argument("target", metavar="OUT")
    convert.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    convert.add_argument("--joints", type=_positive_int, default=checkpoints.DEFAULT_JOINTS, metavar="N")
    convert.set_defaults(run=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = make_parser().parse_args(argv)
        return args.run(args)
    except (UsageError, UnknownVariantError, checkpoints.CheckpointError) as error:
        print(f"cnp: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `cnp table | head`
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
