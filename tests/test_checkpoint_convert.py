"""`cnp convert IN OUT`: the official state_dict, written like any tool writes a file:
atomically, with the umask's mode, never over an existing file unasked, never into a folder
it had to create."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors import safe_open

from cnp.checkpoints import inspect, read
from checkpoint_files import save_official


@pytest.fixture
def source(tiny_state, tmp_path):
    """The tiny model in the released form, M/L-style head keys."""
    return save_official(tiny_state, tmp_path / "a.tar", positional_head=True)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_convert_writes_official_names_without_prefix_or_wrapper(suffix, source, tmp_path, cli):
    assert cli("convert", source, tmp_path / f"b{suffix}").code == 0
    layout = inspect(tmp_path / f"b{suffix}").key_layout
    assert (layout.wrapper, layout.prefixes, layout.head_keys) == (None, (), "named")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_convert_keeps_every_tensor_bit_exact(suffix, source, tiny_state, tmp_path, cli):
    cli("convert", source, tmp_path / f"b{suffix}")
    converted = read(tmp_path / f"b{suffix}").tensors()
    assert sorted(converted) == sorted(tiny_state)  # safetensors orders keys by name
    assert all(torch.equal(converted[k], tiny_state[k]) for k in tiny_state)


def test_convert_keeps_half_precision(tiny_state, tmp_path, cli):
    half = {k: t.half() if t.is_floating_point() else t for k, t in tiny_state.items()}
    cli("convert", save_official(half, tmp_path / "half.tar"), tmp_path / "b.safetensors")
    assert read(tmp_path / "b.safetensors").dtypes == inspect(tmp_path / "half.tar").dtypes


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_convert_gives_the_file_the_mode_the_umask_allows(suffix, umask, source, tmp_path, cli):
    previous = os.umask(umask)
    try:
        cli("convert", source, tmp_path / f"b{suffix}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / f"b{suffix}").stat().st_mode) == 0o666 & ~umask


def test_convert_leaves_no_temporary_file(source, tmp_path, cli):
    cli("convert", source, tmp_path / "b.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "b.pth"]


def test_convert_steps_around_a_temporary_name_already_taken(source, tmp_path, cli, monkeypatch):
    """Another writer's temporary file of the same random name is neither used nor lost."""
    names = iter(["taken", "free"])
    monkeypatch.setattr("secrets.token_hex", lambda n: next(names))
    (tmp_path / ".b.pth.taken.tmp").write_bytes(b"someone else's")
    assert cli("convert", source, tmp_path / "b.pth").code == 0
    assert (tmp_path / ".b.pth.taken.tmp").read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.pth.taken.tmp", "a.tar", "b.pth"]


# ---------------------------------------------------------------- refusals


@pytest.fixture
def precious(tmp_path):
    target = tmp_path / "b.pth"
    target.write_bytes(b"precious")
    return target


def test_convert_refuses_to_overwrite_without_force(source, precious, cli):
    run = cli("convert", source, precious)
    assert run.code == 2 and precious.read_bytes() == b"precious"


def test_convert_refusal_names_the_target_and_the_option(source, precious, cli):
    err = cli("convert", source, precious).err
    assert err.startswith(f"cnp: error: {precious}: exists") and "--force" in err and err.count("\n") == 1


def test_convert_with_force_replaces_the_target(source, precious, cli):
    assert cli("convert", "--force", source, precious).code == 0
    assert read(precious).format == "torch-zip"


@pytest.mark.parametrize("target, problem", [
    ("b.onnx", "unknown output format: name it .safetensors or .pth"),
    ("in.pth", "is the input file"),
    ("folder.pth", "is a directory"),
], ids=["unknown-format", "its-own-input", "a-directory"])
def test_convert_refuses_a_target_it_cannot_write_naming_it(target, problem, source, tmp_path, cli):
    (tmp_path / "folder.pth").mkdir()
    if target == "in.pth":  # a .pth file converted onto itself
        source = tmp_path / "in.pth"
        source.write_bytes((tmp_path / "a.tar").read_bytes())
    before = source.read_bytes()
    run = cli("convert", "--force", source, tmp_path / target)
    assert run.code == 2 and run.err.startswith(f"cnp: error: {tmp_path / target}: {problem}")
    assert source.read_bytes() == before


@pytest.mark.parametrize("parent", ["missing", "a-file"])
def test_convert_refuses_a_folder_that_is_not_there(parent, source, tmp_path, cli):
    if parent == "a-file":
        (tmp_path / "notes").write_text("not a folder")
    folder = tmp_path / ("new" if parent == "missing" else "notes")
    before = sorted(tmp_path.rglob("*"))
    run = cli("convert", source, folder / "b.pth")
    what = "does not exist" if parent == "missing" else "is not a folder"
    assert run.code == 2 and run.err.count("\n") == 1
    assert run.err.startswith(f"cnp: error: {folder / 'b.pth'}: its folder {folder} {what}; nothing written")
    assert sorted(tmp_path.rglob("*")) == before  # nothing created


def test_convert_of_a_bad_source_creates_nothing(tmp_path, cli):
    (tmp_path / "a.pth").write_text("not a checkpoint")
    assert cli("convert", tmp_path / "a.pth", tmp_path / "b.pth").code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth"]


# torch.save reports a full disk as an OSError, or from its zip writer as a RuntimeError.
@pytest.mark.parametrize("failure, reason", [
    (OSError(28, "No space left on device"), "No space left on device"),
    (RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
     "PytorchStreamWriter failed writing file data/0: file write failed"),
], ids=["oserror", "runtimeerror"])
def test_failed_write_leaves_the_target_as_it_was(failure, reason, source, precious, cli, monkeypatch):
    def full_disk(obj, path, *args, **kwargs):
        with open(path, "wb") as file:
            file.write(b"half")
        raise failure

    monkeypatch.setattr(torch, "save", full_disk)
    run = cli("convert", "--force", source, precious)
    assert run.code == 2 and run.err.startswith(f"cnp: error: {precious}: cannot write: {reason}")
    assert precious.read_bytes() == b"precious"
    assert sorted(p.name for p in precious.parent.iterdir()) == ["a.tar", "b.pth"]


def test_convert_api_refuses_to_overwrite_by_default(source, precious):
    from cnp.checkpoints import TargetExistsError, convert

    with pytest.raises(TargetExistsError, match="exists"):
        convert(source, precious)
    assert precious.read_bytes() == b"precious"


def test_convert_writes_beside_the_target_then_renames(source, precious, cli, monkeypatch):
    # A rename is atomic only within one file system: the new file is written in the
    # target's own folder, never in a temporary folder elsewhere.
    written = []
    save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, path, *a, **k: (written.append(path), save(obj, path))[1])
    assert cli("convert", "--force", source, precious).code == 0
    assert [os.path.dirname(p) for p in written] == [str(precious.parent)]
    assert str(precious) not in written


def test_convert_says_which_file_it_wrote(source, tmp_path, cli):
    target = tmp_path / "out.safetensors"
    run = cli("convert", source, target)
    assert run.code == 0 and str(target) in run.out and target.exists()


def test_convert_splits_the_final_layer_by_the_joints_given(source, tmp_path, cli):
    # The tiny model's final layer has 18 × 32 channels: 7 joints do not divide it.
    target = tmp_path / "out.pth"
    run = cli("convert", "--joints", "7", source, target)
    assert run.code == 2 and "--joints" in run.err and not target.exists()


def test_convert_refuses_a_name_too_long_for_its_temporary_file(source, tmp_path, cli):
    # A 250-character name is allowed; the temporary file beside it adds 14 characters.
    target = tmp_path / ("w" * 246 + ".pth")
    run = cli("convert", source, target)
    assert run.code == 2 and run.err.startswith(f"cnp: error: {target}: cannot write: File name too long")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar"]


def test_a_safetensors_conversion_says_its_tensors_are_pytorch_ones(source, tmp_path, cli):
    # Hugging Face's loaders read metadata "format": "pt" to load a file as PyTorch tensors.
    cli("convert", source, tmp_path / "b.safetensors")
    with safe_open(tmp_path / "b.safetensors", framework="pt") as file:
        assert file.metadata() == {"format": "pt"}
