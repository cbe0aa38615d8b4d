"""`cnp check TARGET`: is a user's implementation ConvNeXtPose XS, S, M or L?"""

from __future__ import annotations

import json

from cnp.cli import EXIT_MISMATCH, EXIT_OK, print_columns
from cnp.errors import InputError
from cnp.specs import VARIANTS, get_spec


def _compact(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def _print(target: str, verdicts) -> None:
    for verdict in verdicts:
        print(f"{target} {verdict.variant}: {verdict.status}")
        rows = []
        for check in verdict.checks:
            detail = check.detail
            if check.ok is False and check.check not in ("keys", "numerics"):
                detail = f"expected {_compact(check.expected)}; found {detail}"
            rows.append(["  " + check.check, check.status, detail])
        if rows:
            print_columns(rows)
        if verdict.rename_map:
            print(f"  rename map ({len(verdict.rename_map)} keys, yours -> official; --json lists all):")
            for key, name in list(verdict.rename_map.items())[:3]:
                print(f"    {key} -> {name}")


def cmd_check(args) -> int:
    from cnp.conformance import verify_target  # torch and the user's code: only when asked

    variants = [get_spec(v).name for v in args.variant] or list(VARIANTS)
    verdicts = verify_target(args.target, dict.fromkeys(variants))
    if all(not v.provided for v in verdicts):
        raise InputError(args.target, f"provides none of the variants asked for "
                                      f"({', '.join(variants)}): each raised NotImplementedError")
    if args.json:
        print(json.dumps([v.to_dict() for v in verdicts], indent=2))
    else:
        _print(args.target, verdicts)
    return EXIT_MISMATCH if any(v.status == "fail" for v in verdicts) else EXIT_OK


def register(commands) -> None:
    check = commands.add_parser(
        "check", help="verify your implementation: FILE.py:NAME or MODULE:NAME, NAME(variant) -> nn.Module")
    check.add_argument("target", metavar="TARGET",
                       help="path/to/file.py:NAME or package.module:NAME; importing it runs your code")
    check.add_argument("--variant", action="append", default=[], metavar="V",
                       help="xs, s, m or l; repeat for several (default: all four)")
    check.add_argument("--json", action="store_true",
                       help="a JSON list, one object per variant: variant, status, checks, rename_map")
    check.set_defaults(run=cmd_check)
