"""Reading checkpoints: which tensors a file holds, with their shapes and dtypes.

Generic: nothing here knows ConvNeXtPose (its key remap is in `cnp.identify`). Forms read:
torch zip files under any name (`.pth`, `.tar`, any inner root folder), the older non-zip
torch format, safetensors, torch's zip unzipped into a folder, and a tar / tar.gz / zip
archive wrapping one checkpoint (`cnp.unpacking` finds it). A state_dict may be wrapped
(`{'network': ...}`, `{'state_dict': ...}`, `{'model': ...}`) and its keys prefixed
(`module.`, `_orig_mod.`).

Reading is safe (torch's weights-only unpickler: nothing in a file is executed) and lazy:
zip files are memory-mapped, so are the storages of an unzipped folder, and safetensors
files are opened header-first, so the tensor table costs no tensor data. Data is read only
for fingerprints, non-finite checks, loading and converting. Archive members are read into
memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
import pickle
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy
import torch

from cnp import unpacking
from cnp.errors import CheckpointError, one_line

WRAPPERS = ("network", "state_dict", "model")  # official first
PREFIXES = ("module.", "_orig_mod.")  # DataParallel, torch.compile
# safetensors' dtype codes → torch's names, so a file reads the same in either format.
SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2": "float8_e5m2",
    "F8_E5M2FNUZ": "float8_e5m2fnuz", "C64": "complex64",
}


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class KeyLayout:
    """How the file stores the state_dict, compared with the model's own key names."""

    wrapper: str | None  # "network", "state_dict", "model"; None: a bare state_dict
    prefixes: tuple[str, ...]  # stripped from the keys, outermost first
    # "positional" when a model's key remap renamed layers stored by position (for
    # ConvNeXtPose: cnp.identify.official); "named" when the keys are the model's own.
    head_keys: str = "named"


@dataclass(frozen=True)
class Contents:
    """A checkpoint's tensor table; tensor data is read only by `tensors()`."""

    path: str
    format: str  # "torch-zip", "torch-legacy", "safetensors", "torch-folder" or "memory"
    layout: KeyLayout
    epoch: int | None
    table: dict[str, TensorInfo]
    _fetch: Callable[[], dict[str, torch.Tensor]] = dataclasses.field(repr=False, compare=False)
    container: str | None = None  # "folder", "zip", "tar", "tar.gz", ...: what held it
    member: str | None = None  # the sub-folder or archive member it was read from

    def tensors(self) -> dict[str, torch.Tensor]:
        """Name → tensor. Memory-mapped storages read pages as they are touched."""
        return self._fetch()

    @property
    def dtypes(self) -> dict[str, int]:
        """How many tensors of each dtype, by dtype name: a half-precision file shows here."""
        return dict(sorted(Counter(info.dtype for info in self.table.values()).items()))


# ---------------------------------------------------------------- messages


def _refusal(error: BaseException, kind: str) -> str:
    """torch's weights_only message is a page long; keep the line that names the culprit."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    code = next((line for line in lines if "GLOBAL" in line), None)
    if code:
        return ("refused: its pickle calls code, which safe loading (weights_only=True) does "
                f"not allow ({code}); nothing in it was run")
    # torch's own words for what it rejected follow "WeightsUnpickler error:", on that
    # line or the next; the page before them only explains weights_only.
    after = str(error).partition("WeightsUnpickler error:")[2]
    culprit = next((line.strip() for line in after.splitlines() if line.strip()), one_line(error))
    return f"{kind} (safe loading, weights_only=True, rejected it: {culprit})"


# ---------------------------------------------------------------- keys


def _is_state_dict(value) -> bool:
    return (isinstance(value, dict) and len(value) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def _unwrap(path, obj) -> tuple[dict, str | None, int | None]:
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


def _strip(key: str) -> tuple[str, tuple[str, ...]]:
    stripped = []
    while prefix := next((p for p in PREFIXES if key.startswith(p)), None):
        stripped.append(prefix)
        key = key[len(prefix):]
    return key, tuple(stripped)


def _unprefixed(path, keys) -> tuple[dict[str, str], tuple[str, ...]]:
    """name without prefixes → stored name; the prefixes seen, outermost first."""
    names: dict[str, str] = {}
    prefixes: list[str] = []
    for key in keys:
        name, stripped = _strip(key)
        if name in names:
            raise CheckpointError(path, f"keys {names[name]!r} and {key!r} both mean {name!r}")
        names[name] = key
        prefixes += [p for p in stripped if p not in prefixes]
    return names, tuple(prefixes)


def from_state_dict(state: Mapping[str, torch.Tensor], name: str = "<state_dict>") -> Contents:
    """An in-memory state_dict as Contents (prefixes stripped), to inspect without a file."""
    names, prefixes = _unprefixed(name, state)
    tensors = {key: state[stored] for key, stored in names.items()}
    return Contents(name, "memory", KeyLayout(None, prefixes), None,
                    {k: TensorInfo(tuple(t.shape), str(t.dtype).removeprefix("torch."))
                     for k, t in tensors.items()}, lambda: tensors)


# ---------------------------------------------------------------- formats


def _torch_contents(path, load: Callable[[], object], fmt: str, kind: str, head: bytes) -> Contents:
    """Unpickle with torch's weights-only unpickler, then unwrap the state_dict."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on odd files
            warnings.simplefilter("ignore")
            obj = load()
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - torch's loaders raise a zoo of types
        if isinstance(error, pickle.UnpicklingError):  # how the weights-only unpickler refuses
            raise CheckpointError(path, _refusal(error, kind)) from None
        if fmt == "torch-legacy":  # torch fails with bare KeyErrors ('101'): show the bytes
            raise CheckpointError(path, f"{kind} (starts with {head[:12]!r})") from None
        raise CheckpointError(path, f"{kind} ({one_line(error)})") from None
    state, wrapper, epoch = _unwrap(path, obj)
    contents = from_state_dict(state, str(path))
    return dataclasses.replace(contents, format=fmt, epoch=epoch,
                               layout=dataclasses.replace(contents.layout, wrapper=wrapper))


def _torch_file(path: Path, zip_format: bool, head: bytes) -> Contents:
    kind = ("damaged or truncated PyTorch zip archive" if zip_format
            else "not a PyTorch or safetensors checkpoint")
    return _torch_contents(path, lambda: torch.load(path, map_location="cpu", weights_only=True,
                                                    mmap=zip_format),
                           "torch-zip" if zip_format else "torch-legacy", kind, head)


def _torch_records(path, records: unpacking.Records) -> Contents:
    from torch import _weights_only_unpickler
    from torch.serialization import _load

    # torch.load reads only files; its zip loader takes any record reader (torch's own
    # streaming loader passes one too), and its weights-only unpickler executes nothing.
    return _torch_contents(path, lambda: _load(records, "cpu", _weights_only_unpickler),
                           "torch-folder", "damaged unzipped checkpoint", b"")


def _safetensors(path, source: Path | bytes) -> Contents:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load, load_file

    if isinstance(source, bytes):
        try:
            stored = load(source)
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(path, f"damaged safetensors file ({one_line(error)})") from None
        raw = {key: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for key, t in stored.items()}
        load_all = lambda: stored  # noqa: E731
    else:
        try:
            with safe_open(source, framework="pt") as file:  # reads the header only
                slices = {key: file.get_slice(key) for key in file.keys()}
                raw = {key: (tuple(s.get_shape()), s.get_dtype()) for key, s in slices.items()}
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(path, f"damaged safetensors file ({one_line(error)})") from None
        load_all = lambda: load_file(source)  # noqa: E731
    if not raw:
        raise CheckpointError(path, "no state_dict in it: the safetensors file holds no tensors")
    names, prefixes = _unprefixed(path, raw)

    def fetch() -> dict[str, torch.Tensor]:
        stored = load_all()
        return {key: stored[name] for key, name in names.items()}

    return Contents(
        path=str(path), format="safetensors", layout=KeyLayout(None, prefixes), epoch=None,
        table={key: TensorInfo(raw[name][0], SAFETENSORS_DTYPES.get(raw[name][1], raw[name][1]))
               for key, name in names.items()},
        _fetch=fetch,
    )


def _file_bytes(path, data: bytes) -> Contents:
    """A checkpoint file held in memory (an archive member)."""
    if data.startswith(b"PK\x03\x04"):
        return _torch_contents(path, lambda: torch.load(io.BytesIO(data), map_location="cpu",
                                                        weights_only=True),
                               "torch-zip", "damaged or truncated PyTorch zip archive", data)
    if unpacking.is_safetensors(data[:16], len(data)):
        return _safetensors(path, data)
    return _torch_contents(path, lambda: torch.load(io.BytesIO(data), map_location="cpu",
                                                    weights_only=True),
                           "torch-legacy", "not a PyTorch or safetensors checkpoint", data)


def _found(path: Path, found: unpacking.Found) -> Contents:
    if found.container in (None, "folder"):  # errors name the folder that holds data.pkl
        contents = _torch_records(found.records.where, found.records)
    else:
        try:
            contents = (_torch_records(path, found.records) if found.records is not None
                        else _file_bytes(path, found.data))
        except CheckpointError as error:
            raise CheckpointError(path, f"member {found.member}: {error.problem}") from None
    return dataclasses.replace(contents, path=str(path), container=found.container,
                               member=found.member)


def _zip(path: Path, head: bytes) -> Contents:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise CheckpointError(path, f"damaged or truncated PyTorch zip archive ({one_line(error)})") from None
    root = unpacking.torch_zip_root([i.filename for i in infos])
    if root is not None and all(i.compress_type == zipfile.ZIP_STORED for i in infos):
        return _torch_file(path, zip_format=True, head=head)
    # A zip archive holding checkpoints, or a torch zip re-packed with compression, which
    # cannot be memory-mapped: read as an archive.
    return _found(path, unpacking.in_archive(path, "zip"))


def read(path: str | os.PathLike) -> Contents:
    """A checkpoint's tensor table (no tensor data read); CheckpointError if unreadable."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such file")
    if path.is_dir():
        return _found(path, unpacking.in_folder(path))
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError as error:
        raise CheckpointError(path, f"cannot read: {error.strerror}") from None
    if size == 0:
        raise CheckpointError(path, "empty file")
    if head.startswith(b"PK\x03\x04"):
        return _zip(path, head)
    if path.suffix == ".safetensors" or unpacking.is_safetensors(head, size):
        return _safetensors(path, path)
    archive = unpacking.tar_kind(path, head)
    if archive:
        return _found(path, unpacking.in_archive(path, archive))
    packed = unpacking.compression(head)
    if packed:
        raise CheckpointError(path, f"{packed}-compressed, but not a readable tar archive (cut "
                                    "short, or one compressed file: decompress it first)")
    return _torch_file(path, zip_format=False, head=head)


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


def tensor_manifest(contents: Contents) -> dict:
    """Per tensor: shape, dtype, element count and fingerprint. What snapshots compare."""
    prints = scan(contents).fingerprints
    return {
        "format": contents.format,
        "key_layout": dataclasses.asdict(contents.layout),
        "epoch": contents.epoch,
        "tensors": {key: {"shape": list(info.shape), "dtype": info.dtype, "numel": info.numel,
                          "sha256": prints[key]} for key, info in contents.table.items()},
    }
