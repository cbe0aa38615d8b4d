"""One type for "expected vs found", used by every verdict cnp gives.

`cnp table` (a built model against the spec and the paper), `cnp inspect` (a file's tensors
against a variant), `cnp check` (a user's implementation against the spec) and
`cnp check-onnx` (an export against the model) all report a list of `Check`s, with one
vocabulary of check names, so that `--json` readers and tests see the same fields
everywhere.

Names are dotted paths into the architecture where a check compares one field
("backbone.depths", "head.channels", "head.upsample", "depth_dim", "heatmap_shape") or a
figure ("params_m", "state_dict_m", "gflops"), and plain words where a check stands for a
whole property ("keys", "counts", "numerics").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# How `found` was obtained: read off a built or running model, off a file's tensor shapes,
# or by a convention (upsampling is recorded nowhere in a file).
MEASURED, STORED, INFERRED = "measured", "stored", "inferred"


@dataclass(frozen=True)
class Check:
    """One comparison. `ok` is None when nothing could be compared ("not checked"):
    a check without a source of truth is reported as such, never as a pass."""

    check: str
    expected: object
    found: object
    ok: bool | None
    source: str = "spec"  # where `expected` comes from: spec, paper, other documents, golden
    basis: str = MEASURED  # how `found` was obtained: measured, stored, inferred
    detail: str = ""  # one line a reader needs to act on the verdict

    @property
    def status(self) -> str:
        return {True: "pass", False: "fail", None: "not checked"}[self.ok]

    def to_dict(self) -> dict:
        return plain(dataclasses.asdict(self))


def equal(check: str, expected, found, *, source: str = "spec", basis: str = MEASURED,
          detail: str = "") -> Check:
    """The usual check: `found` must equal `expected` (lists and tuples compare as lists)."""
    return Check(check, plain(expected), plain(found), plain(expected) == plain(found),
                 source, basis, detail)


def failed(checks) -> list[Check]:
    """The checks that fail (not the ones that could not be checked)."""
    return [c for c in checks if c.ok is False]


def plain(value):
    """JSON-ready data: tuples become lists, recursively (what a JSON reader sees)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value
