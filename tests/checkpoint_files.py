"""Checkpoint files made the way users meet them, written into a test's tmp directory.

The official form (see "The released checkpoints" in the spec page): a PyTorch zip archive
whose inner root folder is `snapshot_83.pth`, saved under a `.tar` name, holding
{'epoch', 'network': DataParallel state_dict ('module.' keys), 'optimizer'}; the M and L
files name head layers by position (`deconv_layers_N.0/.1/.2`).
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import zipfile
from pathlib import Path

import torch

from cnp.specs import BackboneSpec, HeadLayerSpec, VariantSpec

# A small ConvNeXtPose that follows the released models' conventions (cubic volumes at
# 256x256: depth_dim 32, the first two head layers upsample) but is no known variant.
TINY = VariantSpec(
    "tiny",
    BackboneSpec("tiny", depths=(1, 1, 2, 1), dims=(8, 16, 24, 32)),
    tuple(HeadLayerSpec(16, kernel=3, upsample=u) for u in (2, 2, 1)),
    depth_dim=32,
)
POSITIONAL_NAMES = {"dwconv": "0", "norm": "1", "pwconv": "2"}
POSITIONAL_HEAD_VARIANTS = ("m", "l")  # the released M and L files name head layers by position


def positional(key: str) -> str:
    """head.deconv_layers_1.dwconv.weight → head.deconv_layers_1.0.weight (the M/L files)."""
    return re.sub(r"^(head\.deconv_layers_\d)\.(dwconv|norm|pwconv)\.",
                  lambda m: f"{m[1]}.{POSITIONAL_NAMES[m[2]]}.", key)


def official_state(state: dict, positional_head: bool = False) -> dict:
    return {"module." + (positional(k) if positional_head else k): v for k, v in state.items()}


def save_official(state: dict, path: Path, positional_head: bool = False, epoch: int = 83) -> Path:
    """`path` in the official form, with the inner root folder `snapshot_83.pth`."""
    network = official_state(state, positional_head)
    optimizer = {"state": {}, "param_groups": [{"lr": 1e-3, "params": list(range(len(network)))}]}
    # torch names the archive's root folder after the file's stem.
    staging = path.parent / f"snapshot_{epoch}.pth.tar"
    torch.save({"epoch": epoch, "network": network, "optimizer": optimizer}, staging)
    os.replace(staging, path)
    return path


class RunsCode:
    """Unpickling this with plain pickle would create `marker`: a stand-in for malware."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def sha256_of(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's bytes in row-major order, by hashlib (not by cnp)."""
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()


def edited_records(checkpoint: Path, edit) -> Path:
    """`checkpoint` (a torch zip) rewritten in place, uncompressed as torch writes it, with
    each record's bytes replaced by `edit(name, data)`; a record it maps to None is left out."""
    with zipfile.ZipFile(checkpoint) as written:
        records = {name: written.read(name) for name in written.namelist()}
    with zipfile.ZipFile(checkpoint, "w", zipfile.ZIP_STORED) as rewritten:
        for name, data in records.items():
            if (edited := edit(name, data)) is not None:
                rewritten.writestr(name, edited)
    return checkpoint


# ---------------------------------------------------------------- the forms users re-pack them in


def unzipped(checkpoint: Path, folder: Path) -> Path:
    """`checkpoint` (a torch zip) extracted into `folder`, as users "extract" a `.tar`:
    returns the inner root folder (`folder/snapshot_83.pth`), holding data.pkl and data/."""
    with zipfile.ZipFile(checkpoint) as archive:
        archive.extractall(folder)
        root = archive.namelist()[0].split("/")[0]
    return folder / root


def packed(archive: Path, members: dict[str, Path]) -> Path:
    """A real archive holding `members` (name in the archive → file or folder on disk);
    tar, tar.gz (by the name's suffix) or zip (deflated, as `zip -r` writes)."""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as written:
            for name, source in members.items():
                files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
                for file in files:
                    inner = name if file == source else f"{name}/{file.relative_to(source).as_posix()}"
                    written.write(file, inner)
    else:
        with tarfile.open(archive, "w:gz" if archive.name.endswith(".gz") else "w") as written:
            for name, source in members.items():
                written.add(source, name)
    return archive
