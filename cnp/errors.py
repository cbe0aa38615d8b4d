"""The one error type for input cnp cannot use.

A file, a target or an option that cnp cannot read or act on: the command line prints
str(error), one line naming what and why, and exits 2, with no traceback.
"""

from __future__ import annotations

import os


class InputError(Exception):
    """`path: problem`, on one line. `path` names the file, target or option at fault."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


class CheckpointError(InputError):
    """A file that is unreadable or not a ConvNeXtPose checkpoint. str() is one line."""


def one_line(error: BaseException) -> str:
    """The first non-blank line of an exception's message (or its type's name): what a
    one-line error quotes of a library's multi-line message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
