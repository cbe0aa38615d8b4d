"""Which ConvNeXtPose a tensor table describes, read from shapes alone, never from a name.

From the table cnp infers stage depths and dims, depthwise kernels, head channels and
kernels, the final layer's outputs and their split into joint_num × depth_dim. Upsampling
has no parameters, so no file records it: cnp infers it from the cubic-volume convention of
the released models (depth_dim equals the heatmap side, which at 256×256 input is 8·2^U for
U upsampling layers, the first U of the three) and labels it "inferred", never "measured".

The released M and L files name head layers by position; `official` renames them first.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from cnp.checks import STORED, Check
from cnp.errors import CheckpointError, one_line
from cnp.model import build
from cnp.reading import Contents, TensorInfo
from cnp.specs import VARIANTS, BackboneSpec, HeadLayerSpec, VariantSpec

DEFAULT_JOINTS = 18  # the released models' joint set (Human3.6M, 18 joints)
CONVENTION_INPUT = 256  # every released model takes 256×256 images
POSITIONAL_HEAD = {"0": "dwconv", "1": "norm", "2": "pwconv"}  # the M and L files
_POSITIONAL_KEY = re.compile(r"^(head\.deconv_layers_\d+)\.([012])\.(.*)$")
_BLOCK_KEY = re.compile(r"^backbone\.stages\.(\d+)\.(\d+)\.")
# A variant named in a file name: ConvNeXtPose_XS.tar, model-l.pth, s_best.safetensors.
_LABEL = re.compile(r"(?:^|[^a-z0-9])(xs|s|m|l)(?=$|[^a-z0-9])", re.IGNORECASE)


class JointCountError(CheckpointError):
    """The final layer's outputs do not split into the given joint count."""


# ---------------------------------------------------------------- official names


def official(contents: Contents) -> Contents:
    """The contents under the official key names: head layers stored by position
    (`head.deconv_layers_N.0/.1/.2`, as in the released M and L files) renamed to
    `dwconv`/`norm`/`pwconv`, and the layout's `head_keys` saying which it was."""
    renamed: dict[str, str] = {}  # official → as read
    for key in contents.table:
        match = _POSITIONAL_KEY.match(key)
        name = f"{match[1]}.{POSITIONAL_HEAD[match[2]]}.{match[3]}" if match else key
        if name in renamed:
            raise CheckpointError(contents.path, f"keys {renamed[name]!r} and {key!r} both mean {name!r}")
        renamed[name] = key
    positional = any(name != key for name, key in renamed.items())
    layout = dataclasses.replace(contents.layout, head_keys="positional" if positional else "named")
    if not positional:
        return dataclasses.replace(contents, layout=layout)

    def fetch() -> dict:
        tensors = contents.tensors()
        return {name: tensors[key] for name, key in renamed.items()}

    return dataclasses.replace(contents, layout=layout, _fetch=fetch,
                               table={name: contents.table[key] for name, key in renamed.items()})


# ---------------------------------------------------------------- inference


@dataclass(frozen=True)
class Inferred:
    """The architecture a tensor table describes."""

    depths: tuple[int, ...]
    dims: tuple[int, ...]
    kernel: int  # depthwise kernel of the backbone blocks
    head_channels: tuple[int, ...]
    head_kernels: tuple[int, ...]
    final_out: int  # final layer outputs = joint_num × depth_dim
    joint_num: int  # given, not stored: the split of final_out assumes it
    depth_dim: int
    head_upsample: tuple[int, ...] | None  # None: cannot be inferred
    upsample_basis: str  # "inferred" or "unknown" from a checkpoint; "measured" from a graph
    upsample_reason: str

    def spec(self, name: str = "inferred", head_upsample: tuple[int, ...] | None = None) -> VariantSpec:
        # Unknown upsampling read as none: upsampling holds no weights, so the keys and
        # shapes this spec implies (all _check_consistent reads) are the same either way,
        # and checkpoints.load refuses a file whose upsampling is unknown before building.
        upsample = head_upsample or self.head_upsample or (1, 1, 1)
        return VariantSpec(
            name=name,
            backbone=BackboneSpec(name, self.depths, self.dims, self.kernel),
            head=tuple(HeadLayerSpec(c, k, u) for c, k, u in
                       zip(self.head_channels, self.head_kernels, upsample)),
            depth_dim=self.depth_dim,
            joint_num=self.joint_num,
        )


def infer_upsample(depth_dim: int) -> tuple[tuple[int, ...] | None, str, str]:
    """(upsampling per head layer, basis, reason) from the cubic-volume convention."""
    side = CONVENTION_INPUT // 32
    for count in range(4):
        if depth_dim == side * 2 ** count:
            return (tuple([2] * count + [1] * (3 - count)), "inferred",
                    f"cubic-volume convention: depth_dim {depth_dim} = heatmap side "
                    f"{side}·2^{count} at {CONVENTION_INPUT}x{CONVENTION_INPUT} input, so "
                    f"{count} upsampling layers, the first {count}")
    return (None, "unknown",
            f"depth_dim {depth_dim} is not {side}·2^U (U = 0..3): the cubic-volume "
            "convention does not apply and no file records upsampling")


def _conv_shape(path, table: Mapping[str, TensorInfo], key: str) -> tuple[int, ...]:
    info = table.get(key)
    if info is None:
        raise CheckpointError(path, f"missing key {key}")
    if len(info.shape) != 4 or min(info.shape) < 1:
        raise CheckpointError(path, f"{key} has shape {list(info.shape)}, not a convolution weight")
    return info.shape


def _looks_like_convnextpose(table) -> bool:
    return any(k.startswith("backbone.downsample_layers.") for k in table) or \
        any(k.startswith("head.final_layer.") for k in table)


def infer(contents: Contents, joint_num: int = DEFAULT_JOINTS) -> Inferred:
    """The architecture from the tensor table alone (official names: see `official`),
    checked against its own key set."""
    if joint_num < 1:  # the caller's mistake, not the file's: no CheckpointError
        raise ValueError(f"joint_num must be a positive integer, got {joint_num}")
    path, table = contents.path, contents.table
    if not _looks_like_convnextpose(table):
        sample = ", ".join(list(table)[:3])
        raise CheckpointError(path, f"not a ConvNeXtPose checkpoint: none of its {len(table)} "
                                    f"keys is backbone.downsample_layers.* or head.final_layer.* "
                                    f"(first: {sample})")
    shape = lambda key: _conv_shape(path, table, key)  # noqa: E731
    dims = (shape("backbone.downsample_layers.0.0.weight")[0],
            *(shape(f"backbone.downsample_layers.{i}.1.weight")[0] for i in (1, 2, 3)))
    blocks = [set() for _ in range(4)]
    for key in table:
        match = _BLOCK_KEY.match(key)
        if match and int(match[1]) < 4:
            blocks[int(match[1])].add(int(match[2]))
    depths = tuple(max(found) + 1 if found else 0 for found in blocks)
    if 0 in depths:
        raise CheckpointError(path, f"stage {depths.index(0)} has no blocks")
    head = [(shape(f"head.deconv_layers_{n}.pwconv.weight")[0],
             shape(f"head.deconv_layers_{n}.dwconv.weight")[-1]) for n in (1, 2, 3)]
    final_out = shape("head.final_layer.weight")[0]
    if final_out % joint_num:
        raise JointCountError(path, f"head.final_layer has {final_out} outputs, not a multiple "
                                    f"of joint_num {joint_num}")
    depth_dim = final_out // joint_num
    upsample, basis, reason = infer_upsample(depth_dim)
    inferred = Inferred(
        depths=depths, dims=dims, kernel=shape("backbone.stages.0.0.dwconv.weight")[-1],
        head_channels=tuple(c for c, _ in head), head_kernels=tuple(k for _, k in head),
        final_out=final_out, joint_num=joint_num, depth_dim=depth_dim,
        head_upsample=upsample, upsample_basis=basis, upsample_reason=reason,
    )
    _check_consistent(contents, inferred)
    return inferred


def _check_consistent(contents: Contents, inferred: Inferred) -> None:
    """Every key and shape must be what the inferred architecture implies: no more, no less."""
    path, table = contents.path, contents.table
    try:
        expected = _state_dict_shapes(inferred.spec())
    except (ValueError, RuntimeError) as error:  # e.g. an even kernel: no valid spec
        raise CheckpointError(path, f"its shapes describe no valid ConvNeXtPose ({one_line(error)})") from None
    missing = [k for k in expected if k not in table]
    extra = [k for k in table if k not in expected]
    for problem, keys in (("missing", missing), ("unexpected", extra)):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            raise CheckpointError(path, f"{problem} key{'s' if len(keys) > 1 else ''} "
                                        f"{', '.join(keys[:3])}{more}")
    for key, want in expected.items():
        if table[key].shape != want:
            raise CheckpointError(path, f"{key} has shape {list(table[key].shape)} but its "
                                        f"neighbours imply {list(want)}")


@functools.lru_cache(maxsize=16)
def _state_dict_shapes(spec: VariantSpec) -> dict[str, tuple[int, ...]]:
    # Cached: building on meta costs ~0.1 s, and a folder of checkpoints repeats specs.
    # Callers only read the dict.
    return {k: tuple(t.shape) for k, t in build(spec, "meta").state_dict().items()}


# ---------------------------------------------------------------- matching


def differences(spec: VariantSpec, inferred: Inferred) -> tuple[Check, ...]:
    """Every field where the tensors' architecture departs from the spec (failed checks)."""
    fields = [
        ("backbone.depths", list(spec.backbone.depths), list(inferred.depths), STORED),
        ("backbone.dims", list(spec.backbone.dims), list(inferred.dims), STORED),
        ("backbone.kernel", spec.backbone.kernel, inferred.kernel, STORED),
        ("head.channels", [h.out_channels for h in spec.head], list(inferred.head_channels), STORED),
        ("head.kernels", [h.kernel for h in spec.head], list(inferred.head_kernels), STORED),
        ("final_layer.out_channels", spec.joint_num * spec.depth_dim, inferred.final_out, STORED),
        ("depth_dim", spec.depth_dim, inferred.depth_dim, STORED),
        ("head.upsample", list(spec.head_upsample),
         list(inferred.head_upsample) if inferred.head_upsample else None, inferred.upsample_basis),
    ]
    return tuple(Check(name, expected, found, False, "spec", basis)
                 for name, expected, found, basis in fields if expected != found)


def best_match(inferred: Inferred) -> str:
    """The known variant with the fewest differences (the first in VARIANTS on a tie)."""
    return min(VARIANTS, key=lambda name: len(differences(VARIANTS[name], inferred)))


def variant_label(path: str | os.PathLike) -> str | None:
    """The variant a file name claims: ConvNeXtPose_XS.tar → "xs"; None if it names none."""
    # Suffixes need no stripping: a label must stand alone, and no suffix (.pth, .tar.gz,
    # .safetensors, ...) is one.
    labels = _LABEL.findall(Path(path).name)
    return labels[-1].lower() if labels else None


def case_id(path: str | os.PathLike) -> str:
    """A test id for a file: `<variant its name claims>-<file name>` (`xs-ConvNeXtPose_XS.tar`),
    so `pytest -k xs` selects the XS files. "xs" elsewhere in a name would match `-k xs`
    too, so there it is written x_s."""
    path = Path(path)
    label = variant_label(path) or "unlabeled"
    name = path.name if label == "xs" else re.sub("xs", "x_s", path.name, flags=re.IGNORECASE)
    return f"{label}-{name}"
