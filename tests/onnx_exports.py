"""ONNX files for the export tests, each written at most once per session (an export costs
10-20 s of torch.export and translation on a 2-core machine).

`Exports[v]` runs `cnp export v` over an existing placeholder file with `--force`, under
the umask UMASK, as a user would; the broken graphs are exports of seeded models with one
module changed, recorded with the provenance of the unchanged model they pretend to be.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from cnp.export import export_onnx, provenance
from cnp.testing import GOLDEN_SEED, seeded_model

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


class Exports(dict):
    """variant → Export of `cnp export VARIANT DIR/VARIANT.onnx --force`, made on first use."""

    def __init__(self, directory: Path):
        super().__init__()
        self.directory = directory

    def __missing__(self, variant: str) -> Export:
        from cnp.cli import main

        path = self.directory / f"convnextpose_{variant}.onnx"
        path.write_bytes(PLACEHOLDER)
        code = _with_umask(UMASK, lambda: main(["export", variant, str(path), "--force"]))
        self[variant] = Export(path, code, True, path.stat().st_mode & 0o777)
        return self[variant]


def misaligned_xs() -> nn.Module:
    """Seeded XS with the first head layer's upsampling align_corners=False and the second's
    nearest: two export mistakes, one per layer, in one graph (one export instead of two)."""
    model = seeded_model("xs")
    model.head.deconv_layers_1.upsample1 = nn.Upsample(scale_factor=2, mode="bilinear",
                                                       align_corners=False)
    model.head.deconv_layers_2.upsample1 = nn.Upsample(scale_factor=2, mode="nearest")
    return model


def export_as_seeded_xs(model: nn.Module, path: Path, coords: bool = True) -> Path:
    """Export `model` with the metadata of cnp's seeded XS (upsampling has no weights, so
    the changed model has exactly those weights): the numerics compare with the real XS."""
    return export_onnx(model, path, coords=coords,
                       metadata=provenance(model, f"seeded:{GOLDEN_SEED}"))


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
