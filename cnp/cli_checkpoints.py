"""`cnp inspect` (what checkpoint files hold) and `cnp convert` (a normalized copy)."""

from __future__ import annotations

import json
import sys

from cnp import checkpoints
from cnp.cli import EXIT_MISMATCH, EXIT_OK, EXIT_USAGE, dims, positive_int
from cnp.errors import InputError
from cnp.specs import get_spec

# What the command line adds to a library error: the option that resolves it.
OPTION_HINTS = (
    (checkpoints.TargetExistsError, "{problem}; pass --force to overwrite it"),
    (checkpoints.JointCountError, "{problem} (see --joints)"),
)


def with_hint(error: InputError) -> InputError:
    for kind, wording in OPTION_HINTS:
        if isinstance(error, kind):
            return type(error)(error.path, wording.format(problem=error.problem))
    return error


def layout_text(layout: checkpoints.KeyLayout) -> str:
    wrapper = f"{{'{layout.wrapper}': state_dict}}" if layout.wrapper else "bare state_dict"
    prefixes = ", ".join(f"prefix {p}" for p in layout.prefixes) or "no prefix"
    return f"{wrapper}, {prefixes}, {layout.head_keys} head keys"


def form_text(report: checkpoints.Report) -> str:
    """torch-zip; torch-folder (sub-folder snapshot_83.pth); torch-zip (member a.pth of a tar.gz archive)."""
    if report.container == "folder":
        return f"{report.format} (sub-folder {report.member})"
    if report.container:
        return f"{report.format} (member {report.member} of a {report.container} archive)"
    return report.format


def report_text(report: checkpoints.Report) -> str:
    inf = report.inferred
    expected = (f" (expected {report.expected_variant.upper()}, from the {report.expected_from})"
                if report.expected_variant else "")
    upsample = dims(inf.head_upsample) if inf.head_upsample else "?"
    dtypes = ", ".join(f"{dtype} {count}" for dtype, count in report.dtypes.items())
    lines = [
        f"{report.path}: {'ok' if report.match else 'MISMATCH'}: holds "
        f"{report.matched_variant.upper()}{expected}",
        f"  {form_text(report)}, {layout_text(report.key_layout)}"
        + (f", epoch {report.epoch}" if report.epoch is not None else "")
        + f"; {report.tensors} tensors ({dtypes}), {report.numel:,} elements",
        f"  backbone depths {dims(inf.depths)} dims {dims(inf.dims)} kernel {inf.kernel}; "
        f"head {dims(inf.head_channels)} kernels {dims(inf.head_kernels)}; final "
        f"{inf.final_out} = {inf.joint_num} joints x {inf.depth_dim} depth",
        f"  upsampling {upsample} ({inf.upsample_basis}: {inf.upsample_reason})",
    ]
    lines += [f"  difference {d.check}: expected {d.expected}, found {d.found} ({d.basis})"
              for d in report.differences]
    return "\n".join(lines)


def cmd_inspect(args) -> int:
    if args.expect:
        get_spec(args.expect)  # an unknown name is a usage error before any file is read
    status, rows = EXIT_OK, []
    for path in args.paths:
        try:
            report = checkpoints.inspect(path, args.expect, joint_num=args.joints,
                                         fingerprints=args.fingerprints)
        except checkpoints.CheckpointError as error:
            error = with_hint(error)
            print(f"cnp: error: {error}", file=sys.stderr)
            rows.append({"path": path, "error": error.problem})
            status = EXIT_USAGE
            continue
        rows.append(report.to_dict())
        if not args.json:
            print(report_text(report))
        if not report.match:
            status = max(status, EXIT_MISMATCH)
    if args.json:
        print(json.dumps(rows, indent=2))
    return status


def cmd_convert(args) -> int:
    try:
        target = checkpoints.convert(args.source, args.target, force=args.force,
                                     joint_num=args.joints)
    except checkpoints.CheckpointError as error:
        raise with_hint(error) from None
    print(f"wrote {target}")
    return EXIT_OK


def register(commands) -> None:
    inspect = commands.add_parser("inspect", help="what checkpoint files hold, from their tensors")
    inspect.add_argument("paths", nargs="+", metavar="PATH",
                         help="checkpoint files, unzipped folders or archives")
    inspect.add_argument("--expect", metavar="V",
                         help="the variant the files should hold (default: the one the file name names)")
    inspect.add_argument("--joints", type=positive_int, default=checkpoints.DEFAULT_JOINTS, metavar="N",
                         help="joint_num, to split the final layer into joints x depth (default 18)")
    inspect.add_argument("--fingerprints", action="store_true",
                         help="read every tensor once: sha256 per tensor, NaN/Inf reported")
    inspect.add_argument("--json", action="store_true", help="a JSON list, one object per file")
    inspect.set_defaults(run=cmd_inspect)

    convert = commands.add_parser("convert", help="write a normalized state_dict (.safetensors or .pth)")
    convert.add_argument("source", metavar="IN", help="a checkpoint in any form inspect reads")
    convert.add_argument("target", metavar="OUT", help="the file to write (.safetensors or .pth)")
    convert.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    convert.add_argument("--joints", type=positive_int, default=checkpoints.DEFAULT_JOINTS, metavar="N",
                         help="joint_num, as for inspect (default 18)")
    convert.set_defaults(run=cmd_convert)
