"""Finding the one checkpoint inside a folder or an archive.

A torch checkpoint is itself a zip archive: one root folder (named after the file it was
first saved as, e.g. `snapshot_83.pth`) holding `data.pkl` (the pickle), `data/0..N` (one
file per storage), `version`, `byteorder` and a few dot-files. Users meet it in two other
forms: unzipped into a folder (an "extracted" `.tar`), and packed with other files into a
real tar, tar.gz or zip archive. This module finds the checkpoint in either and hands it to
`cnp.reading` as the bytes of a checkpoint file or as `Records`, torch's record-reader
interface over an unzipped checkpoint. Nothing is extracted to disk.
"""

from __future__ import annotations

import lzma
import re
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from cnp.errors import CheckpointError, one_line

PICKLE = "data.pkl"
# The only records torch reads from an unzipped checkpoint. A record name is built from a
# key in data.pkl: anything else (`data/../../x`) is refused rather than opened.
_RECORD = re.compile(r"^(data/\w+|\.data/serialization_id|\.format_version|\.storage_alignment"
                     r"|byteorder|version|data\.pkl)$")
_COMPRESSED = {b"\x1f\x8b": "gz", b"BZh": "bz2", b"\xfd7zXZ": "xz"}
# What reading a damaged archive raises (gzip, bz2 and zipfile raise OSError subclasses).
_DAMAGED = (OSError, EOFError, ValueError, zipfile.BadZipFile, tarfile.TarError, zlib.error,
            lzma.LZMAError)


class Records:
    """An unzipped torch checkpoint, read record by record as torch's zip reader would be
    (`has_record`, `get_record`, `get_storage_from_record`, `serialization_id`), so that
    torch's own weights-only unpickler rebuilds the tensors. A record data.pkl refers to
    that is missing, short or empty is a CheckpointError naming it."""

    def __init__(self, where: str | Path):
        self.where = str(where)

    def _size(self, name: str) -> int | None:  # None: no such record
        raise NotImplementedError

    def _bytes(self, name: str) -> bytes:
        raise NotImplementedError

    def _storage(self, name: str, nbytes: int) -> torch.Tensor:
        raise NotImplementedError

    def has_record(self, name: str) -> bool:
        return bool(_RECORD.match(name)) and self._size(name) is not None

    def get_record(self, name: str) -> bytes:
        self._require(name, 0)
        data = self._bytes(name)
        if not data:  # every record torch reads whole has content: this one was cut short
            raise CheckpointError(self.where, f"incomplete unzipped checkpoint: {name} is empty")
        return data

    def get_storage_from_record(self, name: str, nbytes: int, _storage_type) -> torch.Tensor:
        self._require(name, nbytes)
        return self._storage(name, nbytes) if nbytes else torch.empty(0, dtype=torch.uint8)

    def serialization_id(self) -> str:
        name = ".data/serialization_id"
        return self._bytes(name).decode("ascii", "replace") if self.has_record(name) else ""

    def _require(self, name: str, nbytes: int) -> None:
        if not _RECORD.match(name):
            raise CheckpointError(self.where, f"data.pkl refers to a record named {name!r}, "
                                              "which no torch checkpoint has")
        size = self._size(name)
        if size is None:
            raise CheckpointError(self.where, f"incomplete unzipped checkpoint: {name} is "
                                              f"missing (data.pkl refers to it)")
        if size < nbytes:
            raise CheckpointError(self.where, f"incomplete unzipped checkpoint: {name} holds "
                                              f"{size} bytes, data.pkl expects {nbytes} (truncated)")


class FolderRecords(Records):
    """An unzipped checkpoint on disk. Each storage is memory-mapped copy-on-write, so
    reading the tensor table reads no tensor data (as for a zip file)."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.root = root

    def _size(self, name: str) -> int | None:
        path = self.root / name
        return path.stat().st_size if path.is_file() else None

    def _bytes(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def _storage(self, name: str, nbytes: int) -> torch.Tensor:
        return torch.from_file(str(self.root / name), shared=False, size=nbytes, dtype=torch.uint8)


class MemoryRecords(Records):
    """An unzipped checkpoint packed in an archive: its records, read into memory."""

    def __init__(self, where: str | Path, records: dict[str, bytes]):
        super().__init__(where)
        self.records = records

    def _size(self, name: str) -> int | None:
        data = self.records.get(name)
        return None if data is None else len(data)

    def _bytes(self, name: str) -> bytes:
        return self.records[name]

    def _storage(self, name: str, nbytes: int) -> torch.Tensor:
        return torch.frombuffer(bytearray(self.records[name][:nbytes]), dtype=torch.uint8)


@dataclass(frozen=True)
class Found:
    """One checkpoint located in a folder or an archive: its records or its file's bytes."""

    container: str | None  # "folder", "zip", "tar", "tar.gz", ...; None: `path` is the checkpoint
    member: str | None  # the sub-folder or the archive member holding it
    records: Records | None = None  # an unzipped torch checkpoint
    data: bytes | None = None  # a checkpoint file (torch zip, legacy torch or safetensors)


# ---------------------------------------------------------------- folders


def _looks_unzipped(folder: Path) -> bool:
    return (folder / "data").is_dir() or (folder / "version").is_file() or (folder / "byteorder").is_file()


def in_folder(path: Path) -> Found:
    """The unzipped checkpoint `path` is, or the one in a folder one level down."""
    if (path / PICKLE).is_file():
        return Found(None, None, FolderRecords(path))
    try:
        folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as error:
        raise CheckpointError(path, f"cannot read: {error.strerror}") from None
    unzipped = [p for p in folders if (p / PICKLE).is_file()]
    if len(unzipped) == 1:
        return Found("folder", unzipped[0].name, FolderRecords(unzipped[0]))
    if unzipped:
        raise CheckpointError(path, f"is a directory holding {len(unzipped)} unzipped checkpoints "
                                    f"({_listed(p.name for p in unzipped)}): name one of them")
    broken = next((p for p in (path, *folders) if _looks_unzipped(p)), None)
    if broken is not None:
        raise CheckpointError(broken, f"incomplete unzipped checkpoint: {PICKLE} is missing "
                                      f"(the tensors in data/ cannot be rebuilt without it)")
    raise CheckpointError(path, f"is a directory, not an unzipped checkpoint: no {PICKLE} in "
                                "it or in a folder one level down")


# ---------------------------------------------------------------- archives


def torch_zip_root(names: list[str]) -> str | None:
    """The root folder of a torch zip (every entry under it, data.pkl directly in it)."""
    roots = {name.split("/", 1)[0] for name in names}
    root = next(iter(roots)) if len(roots) == 1 else None
    return root if root is not None and f"{root}/{PICKLE}" in names else None


def compression(head: bytes) -> str | None:
    """"gz", "bz2" or "xz" when the bytes start like a compressed stream."""
    return next((kind for magic, kind in _COMPRESSED.items() if head.startswith(magic)), None)


def looks_like_checkpoint_file(head: bytes, size: int) -> bool:
    """A torch zip, a pickle (the legacy torch format) or a safetensors header."""
    return (head.startswith(b"PK\x03\x04")
            or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)
            or is_safetensors(head, size))


def is_safetensors(head: bytes, size: int) -> bool:
    # 8-byte little-endian header length, then a JSON object.
    return (len(head) >= 9 and head[8:9] == b"{"
            and 0 < struct.unpack("<Q", head[:8])[0] <= size - 8)


class _Archive:
    """The regular files of a zip or tar archive, by name, read on demand."""

    def __init__(self, path: Path, kind: str):
        self.path, self.kind = path, kind
        if kind == "zip":
            self._zip = zipfile.ZipFile(path)
            self.sizes = {i.filename: i.file_size for i in self._zip.infolist() if not i.is_dir()}
        else:
            self._tar = tarfile.open(path)  # any compression
            self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
            self.sizes = {name: m.size for name, m in self._members.items()}

    def read(self, name: str, count: int = -1) -> bytes:
        opened = self._zip.open(name) if self.kind == "zip" else self._tar.extractfile(self._members[name])
        with opened:
            return opened.read(count)

    def close(self) -> None:
        (self._zip if self.kind == "zip" else self._tar).close()


def _listed(names, most: int = 5) -> str:
    names = list(names)
    more = f", +{len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def in_archive(path: Path, kind: str) -> Found:
    """The one checkpoint in a zip or tar archive: a checkpoint file among its members, or
    an unzipped checkpoint (a folder with data.pkl). None or several: a CheckpointError."""
    try:
        archive = _Archive(path, kind)
    except _DAMAGED as error:
        raise CheckpointError(path, f"damaged {kind} archive ({one_line(error)})") from None
    try:
        return _the_one_checkpoint(archive)
    except _DAMAGED as error:
        raise CheckpointError(path, f"damaged {kind} archive ({one_line(error)})") from None
    finally:
        archive.close()


def _the_one_checkpoint(archive: _Archive) -> Found:
    names = [n for n in archive.sizes if not n.startswith("__MACOSX/")]
    if {"pickle", "storages", "tensors"} <= set(names):
        raise CheckpointError(archive.path, "torch's pre-1.0 tar format, which cannot be read "
                                            "safely (weights_only=True)")
    # Unzipped checkpoints: folders holding data.pkl ("" when it is at the archive's top).
    folders = sorted({n.rpartition("/")[0] for n in names if n.rpartition("/")[2] == PICKLE})
    inside = tuple(f"{folder}/" if folder else "" for folder in folders)
    files = [n for n in names if not n.startswith(inside)
             and looks_like_checkpoint_file(archive.read(n, 16), archive.sizes[n])]
    found = [f"{folder or '.'}/" for folder in folders] + files
    where = f"a {archive.kind} archive"
    if not found:
        raise CheckpointError(archive.path, f"{where} holding no checkpoint ({len(names)} files: "
                                            f"{_listed(names) or 'none'})")
    if len(found) > 1:
        raise CheckpointError(archive.path, f"{where} holding {len(found)} checkpoints "
                                            f"({_listed(found, 10)}): extract the one to read")
    if files:
        return Found(archive.kind, files[0], data=archive.read(files[0]))
    prefix = inside[0]
    records = {n[len(prefix):]: archive.read(n) for n in names if n.startswith(prefix)}
    return Found(archive.kind, found[0], MemoryRecords(archive.path, records))


def tar_kind(path: Path, head: bytes) -> str | None:
    """"tar", "tar.gz", "tar.bz2" or "tar.xz" if `path` is a tar archive, else None."""
    try:
        if not tarfile.is_tarfile(path):
            return None
    except _DAMAGED:
        return None
    packed = compression(head)
    return f"tar.{packed}" if packed else "tar"
