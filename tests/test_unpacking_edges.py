"""Finding the one checkpoint in a folder or an archive: the edges of what counts as one.

Which archive members are taken for checkpoints (by their first bytes, whatever their
names), what a refusal lists when an archive holds none, what marks a folder as an
unzipped checkpoint with its data.pkl missing, and that reading an unzipped folder never
writes to it.
"""

from __future__ import annotations

import tarfile
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from cnp import CheckpointError
from cnp.checkpoints import inspect, read
from checkpoint_files import packed, save_official, unzipped


def legacy_file(state: dict, path, protocol: int = 2):
    """torch's pre-zip format (a pickle stream), as `_use_new_zipfile_serialization=False`
    writes it; older training scripts and some ports still save that way."""
    torch.save(state, path, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    return path


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_legacy_checkpoint_is_found_in_an_archive_by_its_first_bytes(protocol, tiny_state,
                                                                        tmp_path):
    legacy = legacy_file(tiny_state, tmp_path / "weights.bin", protocol)  # named like no checkpoint
    report = inspect(packed(tmp_path / "release.tar", {"weights.bin": legacy}))
    assert (report.format, report.container, report.member) == ("torch-legacy", "tar", "weights.bin")


@pytest.mark.parametrize("protocol", [4, 5])
def test_a_legacy_checkpoint_of_pickle_protocol_4_or_5_is_found_and_refused_by_name(
        protocol, tiny_state, tmp_path):
    # torch's weights-only unpickler does not read their framed streams (opcode FRAME);
    # the refusal must say so about that member, not claim the archive holds no checkpoint.
    legacy = legacy_file(tiny_state, tmp_path / "weights.bin", protocol)
    archive = packed(tmp_path / "release.tar", {"weights.bin": legacy})
    with pytest.raises(CheckpointError) as error:
        read(archive)
    assert error.value.path == str(archive)
    assert "member weights.bin" in error.value.problem and "weights_only" in error.value.problem


@pytest.mark.parametrize("head", [b"\x80\x01", b"\x80\x06", b"\x81\x02", b"A\x02"],
                         ids=["pickle-protocol-1", "no-protocol-6", "not-0x80", "text"])
def test_a_member_that_only_resembles_a_pickle_is_not_a_checkpoint(head, tiny_state, tmp_path):
    # torch never writes pickle protocol 0 or 1 streams, and no protocol 6 exists.
    (tmp_path / "notes.dat").write_bytes(head + b"\x00" * 30)
    legacy = legacy_file(tiny_state, tmp_path / "weights.bin")
    archive = packed(tmp_path / "release.tar", {"notes.dat": tmp_path / "notes.dat",
                                                "weights.bin": legacy})
    assert inspect(archive).member == "weights.bin"  # one checkpoint, not two


def test_a_member_cut_short_after_the_pickle_header_is_the_one_refused(tmp_path):
    # A legacy checkpoint truncated to its first two bytes (a download cut short): the
    # refusal names that member as unreadable, not the archive as holding no checkpoint.
    (tmp_path / "weights.bin").write_bytes(b"\x80\x02")
    archive = packed(tmp_path / "release.tar", {"weights.bin": tmp_path / "weights.bin"})
    with pytest.raises(CheckpointError) as error:
        read(archive)
    assert error.value.problem.startswith("member weights.bin: ")
    assert "no checkpoint" not in error.value.problem


def test_a_safetensors_member_is_found_by_its_header(tiny_state, tmp_path):
    save_file(dict(tiny_state), tmp_path / "weights.bin")
    report = inspect(packed(tmp_path / "release.zip", {"weights.bin": tmp_path / "weights.bin"}))
    assert (report.format, report.container, report.member) == ("safetensors", "zip", "weights.bin")


@pytest.mark.parametrize("count", [5, 6, 8])
def test_an_archive_without_a_checkpoint_names_five_files_and_counts_the_rest(count, tmp_path):
    names = [f"note{i}.txt" for i in range(count)]
    for name in names:
        (tmp_path / name).write_text("not weights\n")
    archive = packed(tmp_path / "docs.tar", {name: tmp_path / name for name in names})
    with pytest.raises(CheckpointError) as error:
        read(archive)
    message = error.value.problem
    assert "no checkpoint" in message and f"{count} files" in message
    assert all(name in message for name in names[:5])
    assert not any(name in message for name in names[5:])
    assert (f"+{count - 5} more" in message) == (count > 5) and ("more" in message) == (count > 5)


@pytest.fixture
def unzipped_tiny(tiny_state, tmp_path):
    """The tiny model's released file, unzipped: the inner root folder (data.pkl, data/...)."""
    return unzipped(save_official(tiny_state, tmp_path / "a.tar"), tmp_path / "extracted")


@pytest.mark.parametrize("marker", ["data", "version", "byteorder"])
def test_a_folder_with_any_torch_record_but_no_data_pkl_is_an_incomplete_checkpoint(marker,
                                                                                     tmp_path):
    folder = tmp_path / "snapshot_83.pth"
    folder.mkdir()
    if marker == "data":
        (folder / "data").mkdir()
        (folder / "data" / "0").write_bytes(b"\x00" * 8)
    else:
        (folder / marker).write_text("3\n" if marker == "version" else "little")
    with pytest.raises(CheckpointError) as error:
        read(tmp_path)
    assert error.value.path == str(folder)
    assert "data.pkl" in error.value.problem and "missing" in error.value.problem


def test_a_folder_of_other_files_is_not_taken_for_a_checkpoint(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "train.log").write_text("epoch 83\n")
    with pytest.raises(CheckpointError) as error:
        read(tmp_path)
    assert error.value.path == str(tmp_path)
    assert "not an unzipped checkpoint" in error.value.problem


def test_reading_an_unzipped_folder_never_writes_to_it(unzipped_tiny):
    before = {p: p.read_bytes() for p in (unzipped_tiny / "data").iterdir()}
    tensors = read(unzipped_tiny).tensors()
    with torch.no_grad():
        for tensor in tensors.values():
            tensor.add_(1)  # the caller's copy changes; the files must not
    assert {p: p.read_bytes() for p in before} == before


def test_a_record_missing_from_an_archived_folder_names_the_archive(unzipped_tiny, tmp_path):
    (unzipped_tiny / "data" / "3").unlink()
    archive = packed(tmp_path / "release.tar", {"snapshot_83.pth": unzipped_tiny})
    with pytest.raises(CheckpointError) as error:
        read(archive).tensors()
    assert error.value.path == str(archive)
    assert "data/3" in error.value.problem and "missing" in error.value.problem


def test_an_unzipped_folder_from_before_serialization_ids_is_read(unzipped_tiny, tiny_state):
    # Newer torch versions write .data/serialization_id; files saved by older ones lack it.
    (unzipped_tiny / ".data" / "serialization_id").unlink()
    tensors = read(unzipped_tiny).tensors()
    assert all(torch.equal(tensors[key], tiny_state[key]) for key in tiny_state)


@pytest.mark.parametrize("form", ["folder", "archived-folder"])
def test_an_empty_tensor_in_an_unzipped_checkpoint_reads_back_empty(form, tiny_state, tmp_path):
    # A zero-element tensor has a zero-byte storage record: nothing to map or copy.
    state = {**tiny_state, "extra.empty": torch.empty(0, 3)}
    root = unzipped(save_official(state, tmp_path / "a.tar"), tmp_path / "extracted")
    path = root if form == "folder" else packed(tmp_path / "r.tar", {"snapshot_83.pth": root})
    [empty] = [t for key, t in read(path).tensors().items() if key.endswith("extra.empty")]
    assert empty.shape == (0, 3) and empty.dtype == torch.float32


@pytest.mark.parametrize("form", ["folder", "archived-folder"])
def test_an_unzipped_checkpoint_saved_on_a_big_endian_machine_is_byteswapped(form, tmp_path):
    # torch records the saving machine's byte order in `byteorder` and swaps on reading.
    weights = torch.arange(6, dtype=torch.float32).reshape(2, 3) + 0.5
    torch.save({"w": weights}, tmp_path / "w.pth")
    root = unzipped(tmp_path / "w.pth", tmp_path / "extracted")
    storage = root / "data" / "0"
    storage.write_bytes(weights.numpy().astype(">f4").tobytes())  # as a big-endian machine wrote it
    (root / "byteorder").write_text("big")
    path = root if form == "folder" else packed(tmp_path / "r.tar", {root.name: root})
    assert torch.equal(read(path).tensors()["w"], weights)


def test_hidden_folders_beside_an_unzipped_checkpoint_are_not_read(unzipped_tiny, tmp_path):
    # A copy under .backup/ (or .git/, .ipynb_checkpoints/) is no second checkpoint.
    extracted = unzipped_tiny.parent
    other = unzipped(save_official({"w": torch.ones(1)}, extracted / "other.tar"), tmp_path / "x")
    other.rename(extracted / ".backup")  # data.pkl directly in it
    contents = read(extracted)
    assert (contents.container, contents.member) == ("folder", unzipped_tiny.name)


def test_a_folder_that_cannot_be_listed_is_refused_with_the_systems_reason(monkeypatch, tmp_path):
    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(type(tmp_path), "iterdir", refuse)  # root may list any folder
    with pytest.raises(CheckpointError) as error:
        read(tmp_path)
    assert error.value.path == str(tmp_path)
    assert error.value.problem == "cannot read: Permission denied"


def test_a_folder_without_a_checkpoint_says_how_deep_it_looked(tmp_path):
    with pytest.raises(CheckpointError) as error:
        read(tmp_path)
    assert "data.pkl" in error.value.problem and "one level down" in error.value.problem


@pytest.mark.parametrize("names", [("pickle", "storages", "tensors"),
                                   ("sys_info", "pickle", "storages", "tensors")])
def test_torchs_pre_1_0_tar_format_is_refused_as_unsafe(names, tmp_path):
    for name in names:
        (tmp_path / name).write_bytes(b"\x80\x02}q\x00.")  # pickle of {}
    archive = packed(tmp_path / "old.pth", {name: tmp_path / name for name in names})
    with pytest.raises(CheckpointError) as error:
        read(archive)
    assert error.value.path == str(archive)
    assert "pre-1.0" in error.value.problem and "weights_only=True" in error.value.problem


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_an_unzipped_checkpoint_at_the_top_of_an_archive_is_read(kind, unzipped_tiny, tiny_state,
                                                                  tmp_path):
    # Packed from inside the folder (`tar cf ../r.tar .`): data.pkl has no folder above it.
    records = {p.relative_to(unzipped_tiny).as_posix(): p
               for p in sorted(unzipped_tiny.rglob("*")) if p.is_file()}
    contents = read(packed(tmp_path / f"r.{kind}", records))
    assert (contents.container, contents.member) == (kind, "./")
    tensors = contents.tensors()
    assert all(torch.equal(tensors[key], tiny_state[key]) for key in tiny_state)


def test_a_stored_zip_of_two_unzipped_checkpoints_is_refused_naming_both(unzipped_tiny,
                                                                          tmp_path):
    # Every entry sits in a folder with data.pkl, as in a torch zip, but there are two.
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as written:
        for folder in ("a", "b"):
            for file in sorted(p for p in unzipped_tiny.rglob("*") if p.is_file()):
                written.write(file, f"{folder}/{file.relative_to(unzipped_tiny).as_posix()}")
    with pytest.raises(CheckpointError) as error:
        read(archive)
    assert error.value.path == str(archive)
    assert "a zip archive holding 2 checkpoints" in error.value.problem
    assert "a/" in error.value.problem and "b/" in error.value.problem


def test_a_stored_zip_of_one_folder_without_data_pkl_holds_no_checkpoint(tmp_path):
    # One root folder, uncompressed, like a torch zip; without data.pkl it is just an archive.
    archive = tmp_path / "docs.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as written:
        written.writestr("docs/README", "weights: see the release page\n")
    with pytest.raises(CheckpointError) as error:
        read(archive)
    assert error.value.path == str(archive)
    assert "a zip archive holding no checkpoint (1 files: docs/README)" in error.value.problem


def test_macos_resource_forks_are_not_counted_as_files(tmp_path):
    archive = tmp_path / "docs.zip"
    with zipfile.ZipFile(archive, "w") as written:
        written.writestr("README", "weights: see the release page\n")
        written.writestr("__MACOSX/._README", b"\x00\x05\x16\x07" + b"\x00" * 40)
    with pytest.raises(CheckpointError) as error:
        read(archive)
    assert "(1 files: README)" in error.value.problem and "MACOSX" not in error.value.problem


@pytest.mark.parametrize("count", [6, 10, 11])
def test_an_archive_of_many_checkpoints_names_ten_and_counts_the_rest(count, tmp_path):
    members = {}
    for i in range(count):
        save_file({"w": torch.ones(1)}, tmp_path / f"w{i:02}.safetensors")
        members[f"w{i:02}.safetensors"] = tmp_path / f"w{i:02}.safetensors"
    with pytest.raises(CheckpointError) as error:
        read(packed(tmp_path / "many.tar", members))
    message = error.value.problem
    assert f"a tar archive holding {count} checkpoints" in message
    assert all(name in message for name in list(members)[:10])
    assert not any(name in message for name in list(members)[10:])
    assert ("+1 more" in message) == (count == 11) and ("more" in message) == (count > 10)


def test_a_member_whose_bytes_are_damaged_is_refused_with_zipfiles_reason(tiny_state, tmp_path):
    # The archive's directory is intact; the member's data fails its checksum when read.
    torch.save(dict(tiny_state), tmp_path / "a.pth")
    archive = packed(tmp_path / "r.zip", {"a.pth": tmp_path / "a.pth"})
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the deflated member
    archive.write_bytes(bytes(data))
    with zipfile.ZipFile(archive) as written, pytest.raises(Exception) as own:
        written.read("a.pth")
    with pytest.raises(CheckpointError) as error:
        read(archive)
    assert error.value.path == str(archive)
    assert f"damaged zip archive ({str(own.value).splitlines()[0]}" in error.value.problem


def test_a_truncated_tar_gz_is_refused_with_tarfiles_reason(tiny_state, tmp_path):
    torch.save(dict(tiny_state), tmp_path / "a.pth")
    archive = packed(tmp_path / "r.tar.gz", {"a.pth": tmp_path / "a.pth"})
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with tarfile.open(archive) as written, pytest.raises(Exception) as own:
        written.getmembers()
    with pytest.raises(CheckpointError) as error:
        read(archive)
    assert error.value.path == str(archive)
    assert f"damaged tar.gz archive ({str(own.value).splitlines()[0]}" in error.value.problem


@pytest.mark.parametrize("record", ["data.pkl", "byteorder", ".format_version"])
def test_an_empty_record_of_an_unzipped_checkpoint_is_refused_naming_it(record, unzipped_tiny):
    # A zero-byte file where torch wrote content: an extraction cut short (a full disk).
    (unzipped_tiny / record).write_bytes(b"")
    with pytest.raises(CheckpointError) as error:
        read(unzipped_tiny).tensors()
    assert error.value.path == str(unzipped_tiny)
    assert record in error.value.problem and "empty" in error.value.problem
