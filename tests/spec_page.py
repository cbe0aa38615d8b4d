"""The spec page, docs/spec.md, read once: the tests' one transcription of it.

Tests compare what cnp builds, reads or computes with these values, which come from the
page's tables and never from cnp/specs.py, so a typo in either place fails a test.

SPEC_PAGE[variant]: "The variants" table —
    backbone, depths, dims, head (channels of the three head layers: the head depth each),
    upsample (per head layer), layout ("2UP"/"3UP"), depth_dim, joints, input [H, W],
    heatmap [h, w], heatmap_shape [joints·depth_dim, h, w], final_out (joints·depth_dim).
PAPER_PAGE[variant]: "The paper's figures" table —
    mpjpe, pa_mpjpe, gflops, params_m, other_params_m (None where the page has "—").
RELEASED_PAGE[variant]: "Figures others measured from the released files" table —
    inner_root, state_dict_numel, final_out, head_keys (None where the page has "—").
Keys are lower-case variant names ("xs", "s", "m", "l"); lists, to compare with JSON.
CHECK_COLUMNS: the name of each of cnp's spec checks → the SPEC_PAGE field it compares.
"""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "spec.md"
NONE = "—"  # the page's "no figure"

CHECK_COLUMNS = {"backbone.depths": "depths", "backbone.dims": "dims", "head.channels": "head",
                 "head.upsample": "upsample", "depth_dim": "depth_dim",
                 "heatmap_shape": "heatmap_shape"}


def table(text: str, heading: str) -> list[dict[str, str]]:
    """The first markdown table under `## heading`: one dict per row, keyed by header."""
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in section.splitlines()
            if line.startswith("|")]
    if not rows:
        raise ValueError(f"{PAGE}: no table under '## {heading}'")
    header, _rule, *body = rows  # _rule: the |---| line
    return [{name.strip(): cell.strip() for name, cell in zip(header, row)} for row in body]


def ints(cell: str) -> list[int]:
    """Every integer in a cell: '2, 2, 6, 2' → [2, 2, 6, 2]; '×2, ×2, ×1' → [2, 2, 1];
    '32×32' → [32, 32]. (A thousands-separated figure is one number: see `number`.)"""
    return [int(n) for n in re.findall(r"\d+", cell)]


def number(cell: str) -> float | int | None:
    """'7,448,954' → 7448954; '34.5' → 34.5; '—' → None."""
    if cell == NONE:
        return None
    value = cell.replace(",", "")
    return float(value) if "." in value else int(value)


def _variant(row: dict[str, str]) -> dict:
    joints, depth_dim, heatmap = int(row["joints"]), int(row["depth_dim"]), ints(row["heatmap"])
    return {
        "backbone": row["backbone"],
        "depths": ints(row["depths"]),
        "dims": ints(row["dims"]),
        # Layer 1 maps C3 to the head depth; layers 2 and 3 keep it (the page's Head section).
        "head": [int(row["head depth"])] * 3,
        "upsample": ints(row["upsampling per head layer"]),
        "layout": row["paper's name"],
        "depth_dim": depth_dim,
        "joints": joints,
        "input": ints(row["input"]),
        "heatmap": heatmap,
        "heatmap_shape": [joints * depth_dim, *heatmap],
        "final_out": joints * depth_dim,
    }


def _paper(row: dict[str, str]) -> dict:
    return {
        "mpjpe": number(row["MPJPE mm"]),
        "pa_mpjpe": number(row["PA-MPJPE mm"]),
        "gflops": number(row["GFLOPs"]),
        "params_m": number(row["params M"]),
        "other_params_m": number(row["other documents' params M"]),
    }


def _released(row: dict[str, str]) -> dict:
    return {
        "inner_root": row["inner root folder"],
        "state_dict_numel": number(row["state_dict elements"]),
        "final_out": number(row["final layer outputs"]),
        "head_keys": row["head keys"],
    }


def _by_variant(heading: str, read) -> dict[str, dict]:
    return {row["variant"].lower(): read(row) for row in table(TEXT, heading)}


TEXT = PAGE.read_text(encoding="utf-8")
SPEC_PAGE = _by_variant("The variants", _variant)
PAPER_PAGE = _by_variant("The paper's figures", _paper)
RELEASED_PAGE = _by_variant("Figures others measured from the released files", _released)
