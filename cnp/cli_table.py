"""`cnp table` (every variant against the paper) and `cnp summary` (one variant, layer by layer)."""

from __future__ import annotations

import json

from cnp.analysis import MAC_CONVENTION, Summary, compare, millions, summarize
from cnp.cli import EXIT_MISMATCH, EXIT_OK, dims, print_columns, shape_text
from cnp.specs import PAPER, VARIANTS, get_spec


TABLE_TITLE = "ConvNeXtPose variants built by cnp (meta device, 3x256x256 input) vs the paper"
# Printed under the table: what each column counts.
TABLE_NOTES = """
params: trainable parameters, the paper's definition. state_dict: every state_dict
  element, i.e. params + BatchNorm running_mean/running_var (C each) +
  num_batches_tracked (1) per BatchNorm: the figure other documents quote.
GMACs: {convention}.
  Conv weights alone (torch.utils.flop_counter, torchprofile):
    {conv_weights_only}
  One per element also for BatchNorm, ReLU, upsampling and residual adds:
    {all_elementwise}
MPJPE / PA-MPJPE (mm, Human3.6M): the paper's; not computed here."""


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
        "paper": {
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
    check = next(check for check in row["checks"] if check["check"] == field)
    return "ok" if check["ok"] else "MISMATCH"


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
            dims(row["depths"]),
            dims(row["dims"]),
            dims(sorted(set(row["head_channels"]))),
            dims(row["head_upsample"]) + " " + _verdict(row, "head.upsample"),
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
    print(f"{TABLE_TITLE}\n")
    print_columns(lines)
    def other_convention(field: str) -> str:
        return ", ".join(f"{r['variant']} {r[field]:.3f} "
                         f"({(r[field] / r['paper']['gflops'] - 1) * 100:+.1f}%)" for r in rows)
    print(TABLE_NOTES.format(convention=MAC_CONVENTION,
                             conv_weights_only=other_convention("gmacs_conv_weights_only"),
                             all_elementwise=other_convention("gmacs_all_elementwise")))
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
        rows += [[r.name, r.kind, shape_text(r.in_shape), shape_text(r.out_shape), f"{r.params:,}",
                  f"{r.macs:,}"] for r in summary.layers]
        print(f"ConvNeXtPose-{spec.name.upper()}: {summary.backbone} backbone "
              f"{dims(spec.backbone.depths)} / {dims(spec.backbone.dims)}, head "
              f"{dims(h.out_channels for h in summary.head_layers)} upsampling "
              f"{dims(summary.head_upsample)}\n")
        print_columns(rows)
        print(f"\nparams {summary.params:,} (paper {PAPER[spec.name].params_m}M); state_dict elements "
              f"{summary.state_dict_numel:,} ({summary.keys.total} keys: "
              f"{summary.keys.params} parameters, {summary.keys.buffers} buffers)")
        print(f"MACs {summary.macs.total:,} ({MAC_CONVENTION}); paper {PAPER[spec.name].gflops} GFLOPs")
        print(f"heatmaps {shape_text(summary.heatmap_shape)} = volumes {shape_text(summary.volume_shape)}"
              f" -> coordinates {shape_text(summary.coords_shape)}")
        for check in checks:
            if not check.ok:
                print(f"MISMATCH {check.check}: expected {check.expected} ({check.source}), "
                      f"found {check.found}")
    return EXIT_OK if all(c.ok for c in checks) else EXIT_MISMATCH


def register(commands) -> None:
    table = commands.add_parser("table", help="every variant side by side with the paper")
    table.add_argument("--json", action="store_true", help="a JSON list, one object per variant")
    table.set_defaults(run=cmd_table)

    summary = commands.add_parser("summary", help="one variant layer by layer")
    summary.add_argument("variant", help=f"one of {', '.join(VARIANTS)}")
    summary.add_argument("--json", action="store_true", help="the whole summary as JSON")
    summary.set_defaults(run=cmd_summary)
