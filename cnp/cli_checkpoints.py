"""`cnp inspect` (what checkpoint files hold) and `cnp convert` (a normalized copy)."""

from __future__ import annotations

import json
import sys

from cnp import checkpoints
from cnp.cli import EXIT_MISMATCH, EXIT_OK, EXIT_USAGE, positive_int
from cnp.specs import get_spec


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


def register(commands) -> None:
    inspect = commands.add_parser("inspect", help="what checkpoint files hold, from their tensors")
    inspect.add_argument("paths", nargs="+", metavar="PATH")
    inspect.add_argument("--expect", metavar="V",
                         help="the variant the files should hold (default: the one the file name names)")
    inspect.add_argument("--joints", type=positive_int, default=checkpoints.DEFAULT_JOINTS, metavar="N",
                         help="joint_num, to split the final layer into joints x depth (default 18)")
    inspect.add_argument("--fingerprints", action="store_true",
                         help="read every tensor once: sha256 per tensor, NaN/Inf reported")
    inspect.add_argument("--json", action="store_true", help="a JSON list, one object per file")
    inspect.set_defaults(run=cmd_inspect)

    convert = commands.add_parser("convert", help="write a normalized state_dict (.safetensors or .pth)")
    convert.add_argument("source", metavar="IN")
    convert.add_argument("target", metavar="OUT")
    convert.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    convert.add_argument("--joints", type=positive_int, default=checkpoints.DEFAULT_JOINTS, metavar="N")
    convert.set_defaults(run=cmd_convert)
