"""`cnp export` (a model to ONNX) and `cnp check-onnx` (an ONNX file against the model).

Both need the `onnx` extra; without it they say so in one line and exit 2. Their modules
are imported when a command runs, not when the parser is built.
"""

from __future__ import annotations

import json
from pathlib import Path

from cnp.cli import EXIT_MISMATCH, EXIT_OK, positive_int, print_columns
from cnp.errors import InputError
from cnp.specs import VARIANTS


def cmd_export(args) -> int:
    from cnp import checkpoints
    from cnp.export import check_target, export_onnx, provenance, require, seeded
    from cnp.testing import GOLDEN_SEED

    require("onnx", "onnxscript")
    source, target = Path(args.source), Path(args.target)
    check_target(target, args.force)  # before seconds of loading and exporting, not after
    if source.exists():
        if target.exists() and target.resolve() == source.resolve():
            raise InputError(target, "is the input file; write the export elsewhere")
        model = checkpoints.load(source)
        origin = f"checkpoint:{source.name}"
    elif args.source.strip().lower() in VARIANTS:
        model = seeded(args.source.strip().lower(), GOLDEN_SEED)
        origin = f"seeded:{GOLDEN_SEED}"
    else:
        raise InputError(args.source, f"neither a checkpoint file nor a variant "
                                      f"({', '.join(VARIANTS)})")
    path = export_onnx(model, target, opset=args.opset, metadata=provenance(model, origin),
                       force=args.force)
    print(f"wrote {path} ({model.spec.name.upper()}, {origin.replace(':', ' ')})")
    return EXIT_OK


def cmd_check_onnx(args) -> int:
    from cnp.onnx_check import report

    result = report(args.path, args.variant, args.weights)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        variant = result.variant.upper() if result.variant else "no variant"
        unchecked = sum(c.ok is None for c in result.checks)
        verdict = "ok" if result.ok else "FAIL"
        verdict += f" ({unchecked} not checked)" if unchecked else ""
        print(f"{result.path}: {verdict}: checked against {variant}")
        print_columns([[f"  {c.check}", c.status, c.detail] for c in result.checks])
    return EXIT_OK if result.ok else EXIT_MISMATCH


def register(commands) -> None:
    export = commands.add_parser("export", help="write a model to ONNX (needs the onnx extra)")
    export.add_argument("source", metavar="SOURCE",
                        help="a variant (cnp's seeded weights) or a checkpoint file")
    export.add_argument("target", metavar="OUT.onnx", help="the ONNX file to write")
    export.add_argument("--opset", type=positive_int, metavar="N",
                        help="ONNX opset (default: the exporter's; 17 or newer)")
    export.add_argument("--force", action="store_true", help="overwrite OUT.onnx if it exists")
    export.set_defaults(run=cmd_export)

    check = commands.add_parser("check-onnx",
                                help="does an ONNX export compute the model it claims to?")
    check.add_argument("path", metavar="FILE.onnx", help="the ONNX file to check")
    check.add_argument("--variant", metavar="V", help="the variant the file should hold")
    check.add_argument("--weights", metavar="CKPT",
                       help="the checkpoint it was exported from (for the numerics)")
    check.add_argument("--json", action="store_true",
                       help="{path, variant, checks: [{check, ok, expected, found, detail}]}")
    check.set_defaults(run=cmd_check_onnx)
