"""ONNX files for the export tests, each written at most once per session (an export costs
10-20 s of torch.export and translation on a 2-core machine).

`Exports[v]` runs `cnp export v` over an existing placeholder file with `--force`, under
the umask UMASK, as a user would: in this process, or, for the variants named `ahead`, in
one background process started when the session's tests are collected (tests/conftest.py),
so that S's, M's and L's exports (25-30 s) run beside the other tests instead of before
theirs. XS's export stays in this process: mutation testing and coverage see its code run.

The broken graphs are cnp's XS export edited where an export of a changed model differs
from it (milliseconds instead of another export): Resize
attributes as torch's exporter writes them for align_corners=False and for nearest, or the
coordinates output pruned. They keep the XS export's provenance, so their numerics are
compared with the real XS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from torch import nn

from cnp.export import COORDS

UMASK = 0o027  # a new file must get mode 0o666 & ~UMASK = 0o640
PLACEHOLDER = b"an older file that --force replaces"


@dataclass(frozen=True)
class Export:
    path: Path
    code: int  # `cnp export`'s exit code
    replaced: bool  # a file existed at path before the export
    mode: int  # permission bits of the written file


def _with_umask(umask: int, run):
    previous = os.umask(umask)
    try:
        return run()
    finally:
        os.umask(previous)


def export_path(directory: Path, variant: str) -> Path:
    return directory / f"convnextpose_{variant}.onnx"


class Exports(dict):
    """variant → Export of `cnp export VARIANT DIR/VARIANT.onnx --force`, made on first use
    or, for the variants `ahead`, by a background process started at construction."""

    def __init__(self, directory: Path, ahead: tuple[str, ...] = ()):
        super().__init__()
        self.directory, self.ahead, self.process = directory, set(ahead), None
        if ahead:
            for variant in ahead:
                export_path(self.directory, variant).write_bytes(PLACEHOLDER)
            # One thread: the exporter is Python-bound, and this process's tests keep the
            # other core.
            with (directory / "ahead.log").open("wb") as log:
                self.process = subprocess.Popen(
                    [sys.executable, __file__, str(directory), *ahead], umask=UMASK,
                    stdout=subprocess.DEVNULL, stderr=log,
                    env={**os.environ, "OMP_NUM_THREADS": "1"})

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __missing__(self, variant: str) -> Export:
        path = export_path(self.directory, variant)
        if variant in self.ahead:
            code = self._wait_for(variant)
        else:
            from cnp.cli import main

            path.write_bytes(PLACEHOLDER)
            code = _with_umask(UMASK, lambda: main(["export", variant, str(path), "--force"]))
        self[variant] = Export(path, code, True, path.stat().st_mode & 0o777)
        return self[variant]

    def _wait_for(self, variant: str) -> int:
        done = self.directory / f"{variant}.code"
        while not done.exists():
            if self.process.poll() is not None and not done.exists():
                log = (self.directory / "ahead.log").read_text(errors="replace")
                raise RuntimeError(f"the background export of {variant} ended without a "
                                   f"result (exit {self.process.returncode}):\n{log[-2000:]}")
            time.sleep(0.05)
        return int(done.read_text())


# Where tests/conftest.py leaves the Exports it started for the selected tests.
EXPORTS_AHEAD = pytest.StashKey[Exports]()


def _export_ahead(directory: Path, variants: list[str]):
    """The background process: each export, then its exit code in DIR/VARIANT.code (renamed
    into place, so that a reader never sees it half written)."""
    from cnp.cli import main

    for variant in variants:
        code = main(["export", variant, str(export_path(directory, variant)), "--force"])
        (directory / f"{variant}.code.tmp").write_text(str(code))
        (directory / f"{variant}.code.tmp").rename(directory / f"{variant}.code")


# What torch's exporter (2.13, dynamo) writes for nn.Upsample(scale_factor=2,
# mode="bilinear", align_corners=False) and for nn.Upsample(scale_factor=2, mode="nearest"),
# read off exports of such models on 2026-11-22.
ALIGN_CORNERS_FALSE = {"coordinate_transformation_mode": "half_pixel"}
NEAREST = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
           "nearest_mode": "floor"}


def with_resizes(source: Path, target: Path, *changes: dict) -> Path:
    """`source` with the attributes of its i-th Resize node (graph order) set to changes[i];
    one change per Resize node."""
    import onnx

    model = onnx.load(source)
    resizes = [node for node in model.graph.node if node.op_type == "Resize"]
    for node, change in zip(resizes, changes, strict=True):
        # Set whether or not the exporter wrote the attribute (it may omit a default).
        kept = [attribute for attribute in node.attribute if attribute.name not in change]
        del node.attribute[:]
        node.attribute.extend(kept + [onnx.helper.make_attribute(name, value)
                                      for name, value in change.items()])
    onnx.save(model, target)
    return target


def misaligned_xs(source: Path, target: Path) -> Path:
    """XS's export as if head layer 1 upsampled with align_corners=False and head layer 2
    with nearest: two export mistakes, one per layer, in one graph."""
    return with_resizes(source, target, ALIGN_CORNERS_FALSE, NEAREST)


def heatmaps_only(source: Path, target: Path) -> Path:
    """`source` without its `coords` output and the nodes only it needed: what an export of
    the heatmap network alone (no soft-argmax) writes."""
    import onnx

    model = onnx.load(source)
    graph = model.graph
    kept_outputs = [output for output in graph.output if output.name != COORDS]
    del graph.output[:]
    graph.output.extend(kept_outputs)
    needed, kept_nodes = {output.name for output in kept_outputs}, []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            kept_nodes.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept_nodes))
    kept_constants = [tensor for tensor in graph.initializer if tensor.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(kept_constants)
    onnx.checker.check_model(model)
    onnx.save(model, target)
    return target


def export_legacy(model: nn.Module, path: Path, opset: int) -> Path:
    """What older scripts write: torch's TorchScript exporter (dynamo=False), dynamic batch."""
    import warnings

    import torch

    from cnp.export import Exported

    image = torch.zeros(1, 3, *model.spec.input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's own deprecation notice
        torch.onnx.export(Exported(model).eval(), (image,), str(path), dynamo=False,
                          opset_version=opset, input_names=["image"],
                          output_names=["heatmaps", "coords"],
                          dynamic_axes={"image": {0: "batch"}})
    return path


if __name__ == "__main__":
    _export_ahead(Path(sys.argv[1]), sys.argv[2:])
