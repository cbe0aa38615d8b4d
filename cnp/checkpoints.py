"""Checkpoint verification: what a file holds, read from its tensors, never from its name.

The public API: `inspect` (what a file holds, as a `Report`), `load` (the model, weights
loaded strict=True) and `convert` (a normalized copy). Reading the forms users have is
`cnp.reading` (and `cnp.unpacking` for folders and archives); telling which ConvNeXtPose
the tensors describe is `cnp.identify`. Every name below stays importable from here.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from cnp import reading
from cnp.checks import MEASURED, STORED, Check, plain
from cnp.errors import CheckpointError, one_line
from cnp.identify import (DEFAULT_JOINTS, POSITIONAL_HEAD, Inferred, JointCountError, best_match,
                          differences, infer, infer_upsample, official, variant_label)
from cnp.model import ConvNeXtPose, build
from cnp.reading import Contents, KeyLayout, Scan, TensorInfo, fingerprint, scan
from cnp.specs import VARIANTS, VariantSpec, get_spec

__all__ = [
    "DEFAULT_JOINTS", "POSITIONAL_HEAD", "CheckpointError", "Contents", "Inferred", "JointCountError",
    "KeyLayout", "Report", "Scan", "TargetExistsError", "TensorInfo", "best_match", "convert",
    "differences", "fingerprint", "from_state_dict", "infer", "infer_upsample", "inspect", "load",
    "manifest", "read", "scan", "variant_label",
]
OUTPUT_SUFFIXES = (".safetensors", ".pth", ".pt")


class TargetExistsError(CheckpointError):
    """`convert`'s target exists and `force` was not given."""


def read(path: str | os.PathLike) -> Contents:
    """A checkpoint's tensor table under official key names (no tensor data read)."""
    return official(reading.read(path))


def from_state_dict(state: Mapping[str, torch.Tensor], name: str = "<state_dict>") -> Contents:
    """An in-memory state_dict as Contents under official key names, without a file."""
    return official(reading.from_state_dict(state, name))


def manifest(path: str | os.PathLike) -> dict:
    """Per tensor (official names): shape, dtype, element count and fingerprint."""
    return reading.tensor_manifest(read(path))


@dataclass(frozen=True)
class Report:
    path: str
    format: str
    key_layout: KeyLayout
    epoch: int | None
    inferred: Inferred
    matched_variant: str  # best match, by the tensors
    expected_variant: str | None
    expected_from: str | None  # "argument" or "file name"
    differences: tuple[Check, ...]  # from the expected variant, else from the match
    tensors: int
    numel: int
    scan: Scan | None  # None: no tensor data was read
    dtypes: dict[str, int] = dataclasses.field(default_factory=dict)  # dtype name → tensors
    container: str | None = None  # "folder", "zip", "tar", "tar.gz", ...: what held the checkpoint
    member: str | None = None  # the sub-folder or archive member read

    @property
    def match(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict:
        data = {
            "path": self.path,
            "format": self.format,
            "container": self.container,
            "member": self.member,
            "key_layout": dataclasses.asdict(self.key_layout),
            "epoch": self.epoch,
            "inferred": dataclasses.asdict(self.inferred),
            "matched_variant": self.matched_variant,
            "expected_variant": self.expected_variant,
            "expected_from": self.expected_from,
            "match": self.match,
            "differences": [d.to_dict() for d in self.differences],
            "tensors": self.tensors,
            "numel": self.numel,
            "dtypes": self.dtypes,
        }
        if self.scan is not None:
            data["fingerprints"] = self.scan.fingerprints
            data["nonfinite"] = self.scan.nonfinite
        return plain(data)


def inspect(path: str | os.PathLike, expect: str | None = None, *,
            joint_num: int = DEFAULT_JOINTS, fingerprints: bool = False) -> Report:
    """What a checkpoint holds and whether it is the expected variant.

    `expect` defaults to the variant the file name claims (or, for a checkpoint inside a
    folder or an archive, the name of the member). Without `fingerprints` no tensor data is
    read; with it every tensor is hashed once and NaN/Inf values are reported.
    """
    contents = read(path)
    inferred = infer(contents, joint_num)
    matched = best_match(inferred)
    label = variant_label(path) or (variant_label(contents.member.rstrip("/")) if contents.member else None)
    expected, source = (get_spec(expect).name, "argument") if expect else \
        ((label, "file name") if label else (None, None))
    found = differences(VARIANTS[expected or matched], inferred)
    data = scan(contents) if fingerprints else None
    if data is not None and data.nonfinite:
        found += (Check("values.nonfinite", 0, data.nonfinite, False, "spec", MEASURED),)
    return Report(
        path=contents.path, format=contents.format, key_layout=contents.layout,
        epoch=contents.epoch, inferred=inferred, matched_variant=matched,
        expected_variant=expected, expected_from=source, differences=found,
        tensors=len(contents.table), numel=sum(i.numel for i in contents.table.values()),
        scan=data, dtypes=contents.dtypes, container=contents.container, member=contents.member,
    )


def load(path: str | os.PathLike, variant: str | VariantSpec | None = None, *,
         joint_num: int = DEFAULT_JOINTS, device: str | torch.device = "cpu") -> ConvNeXtPose:
    """The model the file holds, its weights loaded strict=True, in eval mode.

    Without `variant` the tensors decide: the known variant they match, else the inferred
    architecture (when its upsampling can be inferred). A named variant the tensors do
    not match is refused rather than loaded. The model is float32 whatever the file's
    dtype: half-precision weights are widened on load.
    """
    contents = read(path)
    inferred = infer(contents, joint_num if not isinstance(variant, VariantSpec) else variant.joint_num)
    if isinstance(variant, VariantSpec):
        spec = variant
    elif variant is not None:
        spec = get_spec(variant)
    else:
        matched = best_match(inferred)
        spec = VARIANTS[matched] if not differences(VARIANTS[matched], inferred) else None
        if spec is None and inferred.head_upsample is None:
            raise CheckpointError(path, f"upsampling cannot be inferred ({inferred.upsample_reason}); "
                                        "pass variant= a VariantSpec")
        spec = spec or inferred.spec()
    stored = [d for d in differences(spec, inferred) if d.basis == STORED]
    if stored:
        listed = "; ".join(f"{d.check} expected {d.expected} found {d.found}" for d in stored)
        raise CheckpointError(path, f"does not hold {spec.name}: {listed}")
    # Built on meta and given uninitialized memory: every tensor is then overwritten by the
    # strict load, so a random initialization would be wasted work.
    model = build(spec, device="meta").to_empty(device=device)
    model.load_state_dict(contents.tensors(), strict=True)
    return model.eval()


def convert(source: str | os.PathLike, target: str | os.PathLike, *, force: bool = False,
            joint_num: int = DEFAULT_JOINTS) -> Path:
    """Write the official state_dict (official names, no prefix, no wrapper) to `target`.

    `.safetensors` or `.pth`, dtypes as stored. The target's folder must exist; an existing
    file is replaced only with `force` (else TargetExistsError), and then atomically: a
    failed write leaves it as it was. The new file's mode follows the umask, as any tool's.
    """
    source, target = Path(source), Path(target)
    if target.suffix not in OUTPUT_SUFFIXES:
        raise CheckpointError(target, "unknown output format: name it .safetensors or .pth")
    folder = target.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise CheckpointError(target, f"its folder {folder} {what}; nothing written")
    if target.is_dir():
        raise CheckpointError(target, "is a directory")
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise CheckpointError(target, "is the input file; write the conversion elsewhere")
    if target.exists() and not force:
        raise TargetExistsError(target, "exists")
    contents = read(source)
    infer(contents, joint_num)  # only a consistent ConvNeXtPose state_dict is written
    tensors = {k: t.contiguous() for k, t in contents.tensors().items()}
    if target.suffix == ".safetensors":
        from safetensors.torch import save_file
        _write_atomically(target, lambda path: save_file(tensors, path, metadata={"format": "pt"}))
    else:
        _write_atomically(target, lambda path: torch.save(tensors, path))
    return target


def _write_atomically(target: Path, write) -> None:
    """Write to a new file beside `target`, then rename it over `target`. The file is
    created with mode 0o666 and the kernel applies the umask; that mode is set again after
    writing, since a writer may replace the file (safetensors writes a 0o600 file)."""
    temporary = None
    try:
        temporary = _new_file_beside(target)
        mode = temporary.stat().st_mode & 0o777
        write(str(temporary))
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk as RuntimeError
        problem = getattr(error, "strerror", None) or one_line(error)
        raise CheckpointError(target, f"cannot write: {problem}") from None
    finally:
        if temporary is not None and temporary.exists():
            temporary.unlink()


def _new_file_beside(target: Path) -> Path:
    while True:
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return candidate
        except FileExistsError:
            continue
