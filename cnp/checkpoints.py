"""Checkpoint verification: what a file holds, read from its tensors, never from its name.

Reading is safe (`torch.load(weights_only=True)`: nothing in a file is executed) and lazy:
zip-format torch files are memory-mapped and safetensors files are opened header-first, so
the tensor table (names, shapes, dtypes) costs no tensor data. Data is read only for
fingerprints, non-finite checks, `load` and `convert`.

From the table alone cnp infers the architecture: stage depths and dims, depthwise kernels,
head channels and kernels, the final layer's outputs and their split into
joint_num × depth_dim. Upsampling has no parameters, so no file records it: cnp infers it
from the cubic-volume convention of the released models (depth_dim equals the heatmap side,
which at 256×256 input is 8·2^U for U upsampling layers, the first U of the three) and
labels it "inferred", never "measured".
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy
import torch

from cnp.checks import MEASURED, STORED, Check, plain
from cnp.errors import InputError
from cnp.model import ConvNeXtPose, build
from cnp.specs import VARIANTS, BackboneSpec, HeadLayerSpec, VariantSpec, get_spec

DEFAULT_JOINTS = 18  # the released models' joint set (Human3.6M, 18 joints)
CONVENTION_INPUT = 256  # every released model takes 256×256 images
WRAPPERS = ("network", "state_dict", "model")  # official first
PREFIXES = ("module.", "_orig_mod.")  # DataParallel, torch.compile
POSITIONAL_HEAD = {"0": "dwconv", "1": "norm", "2": "pwconv"}  # the M and L files
_POSITIONAL_KEY = re.compile(r"^(head\.deconv_layers_\d+)\.([012])\.(.*)$")
_BLOCK_KEY = re.compile(r"^backbone\.stages\.(\d+)\.(\d+)\.")
# A variant named in a file name: ConvNeXtPose_XS.tar, model-l.pth, s_best.safetensors.
_LABEL = re.compile(r"(?:^|[^a-z0-9])(xs|s|m|l)(?=$|[^a-z0-9])", re.IGNORECASE)

SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
    "BOOL": "bool",
}


class CheckpointError(InputError):
    """A file that is unreadable or not a ConvNeXtPose checkpoint. str() is one line."""


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class KeyLayout:
    """How the file stores the state_dict, compared with the official key names."""

    wrapper: str | None  # "network", "state_dict", "model"; None: a bare state_dict
    prefixes: tuple[str, ...]  # stripped from the keys, outermost first
    head_keys: str  # "named" (head.deconv_layers_N.dwconv) or "positional" (….0)

    def describe(self) -> str:
        wrapper = f"{{'{self.wrapper}': state_dict}}" if self.wrapper else "bare state_dict"
        prefixes = ", ".join(f"prefix {p}" for p in self.prefixes) or "no prefix"
        return f"{wrapper}, {prefixes}, {self.head_keys} head keys"


@dataclass(frozen=True)
class Contents:
    """A file's tensor table under official key names; data is read only by `tensors()`."""

    path: str
    format: str  # "torch-zip", "torch-legacy" or "safetensors"
    layout: KeyLayout
    epoch: int | None
    table: dict[str, TensorInfo]
    _fetch: Callable[[], dict[str, torch.Tensor]] = dataclasses.field(repr=False, compare=False)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Official name → tensor. Memory-mapped torch files read pages as they are touched."""
        return self._fetch()


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _refusal(error: BaseException, zip_format: bool) -> str:
    """torch's weights_only message is a page long; keep the line that names the culprit."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    code = next((line for line in lines if "GLOBAL" in line), None)
    if code:
        return ("refused: its pickle calls code, which safe loading (weights_only=True) does "
                f"not allow ({code}); nothing in it was run")
    culprit = next((line for line in lines if "Unsupported" in line), _one_line(error))
    kind = "damaged PyTorch zip archive" if zip_format else "not a PyTorch or safetensors checkpoint"
    return f"{kind} (safe loading, weights_only=True, rejected it: {culprit})"


def _is_safetensors(head: bytes, size: int) -> bool:
    # 8-byte little-endian header length, then a JSON object.
    return (len(head) >= 9 and head[8:9] == b"{"
            and 0 < struct.unpack("<Q", head[:8])[0] <= size - 8)


def _torch_load(path: Path, mmap: bool):
    with warnings.catch_warnings():  # torch warns about pickle protocols on odd files
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _is_state_dict(value) -> bool:
    return (isinstance(value, dict) and len(value) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def _unwrap(path: Path, obj) -> tuple[dict, str | None, int | None]:
    if _is_state_dict(obj):
        return obj, None, None
    if isinstance(obj, dict):
        epoch = obj.get("epoch") if isinstance(obj.get("epoch"), int) else None
        for wrapper in WRAPPERS:
            if _is_state_dict(obj.get(wrapper)):
                return obj[wrapper], wrapper, epoch
        keys = ", ".join(repr(k) for k in list(obj)[:5])
        raise CheckpointError(path, f"no state_dict in it: a dict with keys {keys} and no "
                                    f"tensor dict under {', '.join(WRAPPERS)}")
    raise CheckpointError(path, f"no state_dict in it: it holds a {type(obj).__name__}")


def _official_name(key: str) -> tuple[str, tuple[str, ...], bool]:
    """(official name, prefixes stripped, whether the head key was positional)."""
    stripped = []
    while prefix := next((p for p in PREFIXES if key.startswith(p)), None):
        stripped.append(prefix)
        key = key[len(prefix):]
    match = _POSITIONAL_KEY.match(key)
    if match:
        key = f"{match[1]}.{POSITIONAL_HEAD[match[2]]}.{match[3]}"
    return key, tuple(stripped), bool(match)


def _normalize(path: Path, keys) -> tuple[dict[str, str], tuple[str, ...], bool]:
    """official name → stored name; the prefixes seen; whether head keys were positional."""
    names: dict[str, str] = {}
    prefixes: list[str] = []
    positional = False
    for key in keys:
        official, stripped, was_positional = _official_name(key)
        if official in names:
            raise CheckpointError(path, f"keys {names[official]!r} and {key!r} both mean {official!r}")
        names[official] = key
        prefixes += [p for p in stripped if p not in prefixes]
        positional |= was_positional
    return names, tuple(prefixes), positional


def _read_torch(path: Path, zip_format: bool) -> Contents:
    try:
        obj = _torch_load(path, mmap=zip_format)
    except Exception as error:  # noqa: BLE001 - torch's loaders raise a zoo of types
        if "Weights only load failed" in str(error):
            raise CheckpointError(path, _refusal(error, zip_format)) from None
        if zip_format:
            problem = f"damaged or truncated PyTorch zip archive ({_one_line(error)})"
        else:
            # torch's legacy unpickler fails with bare KeyErrors ('101'): show the bytes.
            with open(path, "rb") as stream:
                problem = f"not a PyTorch or safetensors checkpoint (starts with {stream.read(12)!r})"
        raise CheckpointError(path, problem) from None
    state, wrapper, epoch = _unwrap(path, obj)
    contents = from_state_dict(state, str(path))
    return dataclasses.replace(contents, format="torch-zip" if zip_format else "torch-legacy",
                               layout=dataclasses.replace(contents.layout, wrapper=wrapper),
                               epoch=epoch)


def _read_safetensors(path: Path) -> Contents:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(path, framework="pt") as file:  # reads the header only
            slices = {key: file.get_slice(key) for key in file.keys()}
            raw = {key: (tuple(s.get_shape()), s.get_dtype()) for key, s in slices.items()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(path, f"damaged safetensors file ({_one_line(error)})") from None
    if not raw:
        raise CheckpointError(path, "no state_dict in it: the safetensors file holds no tensors")
    names, prefixes, positional = _normalize(path, raw)

    def fetch() -> dict[str, torch.Tensor]:
        stored = load_file(path)
        return {official: stored[key] for official, key in names.items()}

    return Contents(
        path=str(path),
        format="safetensors",
        layout=KeyLayout(None, prefixes, "positional" if positional else "named"),
        epoch=None,
        table={official: TensorInfo(raw[key][0], SAFETENSORS_DTYPES.get(raw[key][1], raw[key][1]))
               for official, key in names.items()},
        _fetch=fetch,
    )


def from_state_dict(state: Mapping[str, torch.Tensor], name: str = "<state_dict>") -> Contents:
    """An in-memory state_dict as Contents, to inspect without writing a file."""
    names, prefixes, positional = _normalize(Path(name), state)
    tensors = {official: state[stored] for official, stored in names.items()}
    return Contents(name, "memory", KeyLayout(None, prefixes, "positional" if positional else "named"),
                    None, {k: TensorInfo(tuple(t.shape), str(t.dtype).removeprefix("torch."))
                           for k, t in tensors.items()}, lambda: tensors)


def read(path: str | os.PathLike) -> Contents:
    """A checkpoint's tensor table (no tensor data read); CheckpointError if unreadable."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such file")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, not a checkpoint file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError as error:
        raise CheckpointError(path, f"cannot read: {error.strerror}") from None
    if size == 0:
        raise CheckpointError(path, "empty file")
    if head.startswith(b"PK\x03\x04"):
        return _read_torch(path, zip_format=True)
    if path.suffix == ".safetensors" or _is_safetensors(head, size):
        return _read_safetensors(path)
    return _read_torch(path, zip_format=False)


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
    upsample_basis: str  # "inferred" or "unknown", never "measured"
    upsample_reason: str

    def spec(self, name: str = "inferred", head_upsample: tuple[int, ...] | None = None) -> VariantSpec:
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
    """The architecture from the tensor table alone, checked against its own key set."""
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
        raise CheckpointError(path, f"head.final_layer has {final_out} outputs, not a multiple "
                                    f"of joint_num {joint_num} (see --joints)")
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
        expected = {k: tuple(t.shape) for k, t in build(inferred.spec(), "meta").state_dict().items()}
    except (ValueError, RuntimeError) as error:  # e.g. an even kernel: no valid spec
        raise CheckpointError(path, f"its shapes describe no valid ConvNeXtPose ({_one_line(error)})") from None
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
    name = Path(path).name
    for suffix in (".safetensors", ".tar", ".pth", ".pt", ".bin", ".ckpt"):
        name = name.removesuffix(suffix)
    labels = _LABEL.findall(name)
    return labels[-1].lower() if labels else None


# ---------------------------------------------------------------- data


def _as_array(tensor: torch.Tensor) -> numpy.ndarray:
    """The tensor's elements as a flat numpy array, sharing memory where numpy has the dtype."""
    flat = tensor.detach().contiguous().reshape(-1)
    return flat.numpy() if flat.dtype != torch.bfloat16 else flat.float().numpy()


def fingerprint(tensor: torch.Tensor) -> str:
    """sha256 of the tensor's bytes in row-major order."""
    data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(data.numpy()).hexdigest()


def _nonfinite(tensor: torch.Tensor) -> int:
    """How many NaN or ±Inf elements. A finite sum proves there are none; only a non-finite
    sum (NaN, Inf or an overflow) pays for the element-wise count. numpy, not torch: torch's
    threaded reductions cost ~1 ms a call on small machines, numpy's a few µs."""
    if not tensor.is_floating_point():
        return 0
    array = _as_array(tensor)
    with numpy.errstate(over="ignore", invalid="ignore"):
        if numpy.isfinite(array.sum()):
            return 0
    return int(array.size - numpy.count_nonzero(numpy.isfinite(array)))


@dataclass(frozen=True)
class Scan:
    """What reading every tensor's bytes once tells: fingerprints and non-finite counts."""

    fingerprints: dict[str, str]
    nonfinite: dict[str, int]  # only tensors that hold NaN or ±Inf


def scan(contents: Contents) -> Scan:
    tensors = contents.tensors()
    prints = {key: fingerprint(t) for key, t in tensors.items()}  # reads every byte once
    counts = {key: _nonfinite(t) for key, t in tensors.items()}
    return Scan(prints, {key: n for key, n in counts.items() if n})


def manifest(path: str | os.PathLike) -> dict:
    """Per tensor: shape, dtype, element count and fingerprint. What snapshots compare."""
    contents = read(path)
    prints = scan(contents).fingerprints
    return {
        "format": contents.format,
        "key_layout": dataclasses.asdict(contents.layout),
        "epoch": contents.epoch,
        "tensors": {key: {"shape": list(info.shape), "dtype": info.dtype, "numel": info.numel,
                          "sha256": prints[key]} for key, info in contents.table.items()},
    }


# ---------------------------------------------------------------- reports


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

    @property
    def match(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict:
        data = {
            "path": self.path,
            "format": self.format,
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
        }
        if self.scan is not None:
            data["fingerprints"] = self.scan.fingerprints
            data["nonfinite"] = self.scan.nonfinite
        return plain(data)

    def text(self) -> str:
        inf = self.inferred
        join = lambda values: ",".join(str(v) for v in values)  # noqa: E731
        expected = (f" (expected {self.expected_variant.upper()}, from the {self.expected_from})"
                    if self.expected_variant else "")
        upsample = join(inf.head_upsample) if inf.head_upsample else "?"
        lines = [
            f"{self.path}: {'ok' if self.match else 'MISMATCH'}: holds "
            f"{self.matched_variant.upper()}{expected}",
            f"  {self.format}, {self.key_layout.describe()}"
            + (f", epoch {self.epoch}" if self.epoch is not None else "")
            + f"; {self.tensors} tensors, {self.numel:,} elements",
            f"  backbone depths {join(inf.depths)} dims {join(inf.dims)} kernel {inf.kernel}; "
            f"head {join(inf.head_channels)} kernels {join(inf.head_kernels)}; final "
            f"{inf.final_out} = {inf.joint_num} joints x {inf.depth_dim} depth",
            f"  upsampling {upsample} ({inf.upsample_basis}: {inf.upsample_reason})",
        ]
        lines += [f"  difference {d.check}: expected {d.expected}, found {d.found} ({d.basis})"
                  for d in self.differences]
        return "\n".join(lines)


def inspect(path: str | os.PathLike, expect: str | None = None, *,
            joint_num: int = DEFAULT_JOINTS, fingerprints: bool = False) -> Report:
    """What a checkpoint holds and whether it is the expected variant.

    `expect` defaults to the variant the file name claims. Without `fingerprints` no tensor
    data is read; with it every tensor is hashed once and NaN/Inf values are reported.
    """
    contents = read(path)
    inferred = infer(contents, joint_num)
    matched = best_match(inferred)
    label = variant_label(path)
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
        scan=data,
    )


def load(path: str | os.PathLike, variant: str | VariantSpec | None = None, *,
         joint_num: int = DEFAULT_JOINTS, device: str | torch.device = "cpu") -> ConvNeXtPose:
    """The model the file holds, its weights loaded strict=True, in eval mode.

    Without `variant` the tensors decide: the known variant they match, else the inferred
    architecture (when its upsampling can be inferred). A named variant the tensors do
    not match is refused rather than loaded.
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

    `.safetensors` or `.pth`. An existing file is replaced only with `force`, and then
    atomically: a failed write leaves it as it was.
    """
    source, target = Path(source), Path(target)
    if target.suffix not in (".safetensors", ".pth", ".pt"):
        raise CheckpointError(target, "unknown output format: name it .safetensors or .pth")
    if target.exists() and target.resolve() == source.resolve():
        raise CheckpointError(target, "is the input file; write the conversion elsewhere")
    if target.exists() and not force:
        raise CheckpointError(target, "exists; pass --force to overwrite it")
    contents = read(source)
    infer(contents, joint_num)  # only a consistent ConvNeXtPose state_dict is written
    tensors = {k: t.contiguous() for k, t in contents.tensors().items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(handle)
    try:
        if target.suffix == ".safetensors":
            from safetensors.torch import save_file
            save_file(tensors, temporary, metadata={"format": "pt"})
        else:
            torch.save(tensors, temporary)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target
