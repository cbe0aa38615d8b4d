"""The `cnp` command line: the parser, exit codes and what every command shares.

Each command lives in a module of its own (cli_table, cli_bench, cli_checkpoints, ...),
which adds its sub-parser in `register(commands)` and is imported only when the parser is
built, so `cnp table` does not pay for what `cnp bench` imports.

Exit codes (documented in the README):
  0  everything compared matches
  1  a compared cell (or a checked file) does not match
  2  usage error or unreadable input: one line on stderr, no traceback
"""

from __future__ import annotations

import argparse
import sys

from cnp.errors import InputError
from cnp.specs import UnknownVariantError

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage block; users asked for one line they can read.
    def error(self, message: str) -> None:
        raise UsageError(message)


def dims(values) -> str:
    return ",".join(str(v) for v in values)


def shape_text(shape) -> str:
    return "x".join(str(v) for v in shape)


def print_columns(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def positive_int(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def make_parser() -> argparse.ArgumentParser:
    from cnp import cli_bench, cli_check, cli_checkpoints, cli_onnx, cli_table

    parser = _Parser(prog="cnp", description="Verify the ConvNeXtPose architecture.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in (cli_check, cli_table, cli_checkpoints, cli_onnx, cli_bench):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = make_parser().parse_args(argv)
        return args.run(args)
    except (UsageError, UnknownVariantError, InputError) as error:
        print(f"cnp: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `cnp table | head`
        return EXIT_OK


if __name__ == "__main__":
    # `python -m cnp.cli` runs this file as __main__, a second copy of the module: the
    # commands raise cnp.cli.UsageError, which only cnp.cli's own main() catches.
    from cnp.cli import main as cnp_main

    sys.exit(cnp_main())
