"""The forms checkpoints come in: wrappers, prefixes and formats; torch's zip unzipped into a
folder; real archives wrapping one checkpoint; half precision. Each is read, loaded bit-exact,
or refused in one line that names what is wrong."""

from __future__ import annotations

import os
import pickle
from collections import Counter

import pytest
import torch
from safetensors.torch import save_file

from cnp import CheckpointError
from cnp.checkpoints import inspect, load, read
from checkpoint_files import TINY, RunsCode, official_state, packed, save_official, unzipped


# ---------------------------------------------------------------- wrappers, prefixes, formats


def _layouts(state):
    """name → (file name, how to write it, expected format, wrapper, prefixes, head keys)."""
    official = official_state(state)
    return {
        "official-positional": ("a.tar", lambda p: save_official(state, p, positional_head=True),
                                "torch-zip", "network", ("module.",), "positional"),
        "legacy-format": ("a.pth.tar", lambda p: torch.save({"epoch": 3, "network": official}, p,
                                                          _use_new_zipfile_serialization=False),
                          "torch-legacy", "network", ("module.",), "named"),
        "safetensors": ("a.safetensors", lambda p: save_file(dict(state), p),
                        "safetensors", None, (), "named"),
        "state_dict-wrapper": ("a.pth", lambda p: torch.save({"state_dict": state}, p),
                               "torch-zip", "state_dict", (), "named"),
        "model-wrapper": ("a.pth", lambda p: torch.save({"model": state}, p),
                          "torch-zip", "model", (), "named"),
        "bare": ("a.pt", lambda p: torch.save(state, p), "torch-zip", None, (), "named"),
        "compiled": ("a.pth", lambda p: torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, p),
                     "torch-zip", None, ("_orig_mod.",), "named"),
        "compiled-dataparallel": ("a.pth", lambda p: torch.save(
            {f"module._orig_mod.{k}": v for k, v in state.items()}, p),
            "torch-zip", None, ("module.", "_orig_mod."), "named"),
    }


LAYOUTS = list(_layouts({}))


@pytest.fixture(params=LAYOUTS)
def tiny_file(request, tiny_state, tmp_path):
    name, write, *layout = _layouts(tiny_state)[request.param]
    path = tmp_path / name
    write(path)
    return path, layout


def test_every_layout_is_read(tiny_file):
    path, (fmt, wrapper, prefixes, head_keys) = tiny_file
    report = inspect(path)
    assert (report.path, report.format) == (str(path), fmt)
    assert (report.key_layout.wrapper, report.key_layout.prefixes, report.key_layout.head_keys) == \
        (wrapper, prefixes, head_keys)
    assert report.inferred.spec("tiny") == TINY


def test_every_layout_loads_bit_exact(tiny_file, tiny_state):
    loaded = load(tiny_file[0]).state_dict()
    assert list(loaded) == list(tiny_state)
    assert all(torch.equal(loaded[k], tiny_state[k]) for k in tiny_state)


def test_unknown_architecture_matches_no_variant(tiny_file):
    report = inspect(tiny_file[0])
    assert report.expected_variant is None and not report.match
    assert "backbone.dims" in {d.check for d in report.differences}


def _mapped_ranges(path):
    """Address ranges where this process maps `path` (Linux /proc/self/maps)."""
    ranges = []
    for line in open("/proc/self/maps"):
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(path):
            start, end = (int(v, 16) for v in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_tensors_stay_in_the_mapped_file_until_touched(tiny_state, tmp_path):
    path = save_official(tiny_state, tmp_path / "a.tar")
    contents = read(path)
    ranges = _mapped_ranges(path.resolve())
    pointers = [t.untyped_storage().data_ptr() for t in contents.tensors().values()]
    # Every storage points into the file's memory map: nothing was copied into memory,
    # so reading the tensor table read no tensor data.
    assert ranges and all(any(a <= p < b for a, b in ranges) for p in pointers)


# ---------------------------------------------------------------- unzipped folders and archives


def _released_tiny(tmp_path, state):
    """The tiny model in the released form (M/L-style positional head keys)."""
    (tmp_path / "release").mkdir(exist_ok=True)
    return save_official(state, tmp_path / "release" / "ConvNeXtPose_T.tar", positional_head=True)


def _forms(tmp_path, state):
    """name → (how to write it: () → the path to read, format, container, member)."""
    def released():
        return _released_tiny(tmp_path, state)

    def folder(level):
        root = unzipped(released(), tmp_path / "extracted")
        return root if level == "direct" else root.parent

    def archive(name, member):
        source = released() if member.endswith(".tar") else unzipped(released(), tmp_path / "extracted")
        return packed(tmp_path / name, {member.rstrip("/"): source})

    def archived_file(name, member, save):  # another format, wrapped in an archive
        (tmp_path / "other").mkdir(exist_ok=True)
        save(official_state(state, positional_head=True), tmp_path / "other" / member)
        return packed(tmp_path / name, {member: tmp_path / "other" / member})

    def legacy(network, path):
        torch.save({"epoch": 83, "network": network}, path, _use_new_zipfile_serialization=False)

    def recompressed():  # the torch zip's own entries, deflated (`zip -r` of the unzipped folder)
        return packed(tmp_path / "snapshot.zip", {"snapshot_83.pth": unzipped(released(), tmp_path / "x")})

    return {
        "folder-direct": (lambda: folder("direct"), "torch-folder", None, None),
        "folder-one-level-down": (lambda: folder("parent"), "torch-folder", "folder", "snapshot_83.pth"),
        "tar-of-file": (lambda: archive("a.tar", "weights/a.tar"), "torch-zip", "tar", "weights/a.tar"),
        "tar.gz-of-file": (lambda: archive("a.tar.gz", "a.tar"), "torch-zip", "tar.gz", "a.tar"),
        "zip-of-file": (lambda: archive("a.zip", "a.tar"), "torch-zip", "zip", "a.tar"),
        "tar-of-folder": (lambda: archive("b.tar", "m/snapshot_83.pth/"), "torch-folder", "tar",
                          "m/snapshot_83.pth/"),
        "zip-of-folder": (lambda: archive("b.zip", "m/snapshot_83.pth/"), "torch-folder", "zip",
                          "m/snapshot_83.pth/"),
        "deflated-torch-zip": (recompressed, "torch-folder", "zip", "snapshot_83.pth/"),
        "tar-of-safetensors": (lambda: archived_file("c.tar", "w.safetensors", save_file),
                               "safetensors", "tar", "w.safetensors"),
        "zip-of-legacy-file": (lambda: archived_file("c.zip", "w.pth", legacy),
                               "torch-legacy", "zip", "w.pth"),
    }


FORMS = list(_forms(None, None))


@pytest.fixture(scope="module", params=FORMS)
def tiny_form(request, tiny_state, tmp_path_factory):
    """(path, (format, container, member)): written once per module, only ever read."""
    write, *form = _forms(tmp_path_factory.mktemp(request.param), tiny_state)[request.param]
    return write(), form


def test_every_form_is_read_as_what_it_is(tiny_form):
    path, (fmt, container, member) = tiny_form
    report = inspect(path)
    assert (report.path, report.format, report.container, report.member) == \
        (str(path), fmt, container, member)


def test_every_form_reports_the_dtypes_saved(tiny_form, tiny_state):
    saved = Counter(str(t.dtype).removeprefix("torch.") for t in tiny_state.values())
    assert inspect(tiny_form[0]).dtypes == saved


def test_every_form_yields_the_architecture_saved(tiny_form):
    assert inspect(tiny_form[0]).inferred.spec("tiny") == TINY


def test_every_form_renames_positional_head_keys(tiny_form):
    assert inspect(tiny_form[0]).key_layout.head_keys == "positional"


def test_every_form_loads_bit_exact(tiny_form, tiny_state):
    loaded = load(tiny_form[0]).state_dict()
    assert all(torch.equal(loaded[k], tiny_state[k]) for k in tiny_state)


def test_every_form_converts_to_the_official_state_dict(tiny_form, tiny_state, tmp_path, cli):
    assert cli("convert", tiny_form[0], tmp_path / "out.safetensors").code == 0
    written = read(tmp_path / "out.safetensors").tensors()
    assert sorted(written) == sorted(tiny_state)
    assert all(torch.equal(written[k], tiny_state[k]) for k in tiny_state)


def test_folder_is_labeled_by_its_name(tiny_state, tmp_path):
    unzipped(_released_tiny(tmp_path, tiny_state), tmp_path / "ConvNeXtPose_XS")
    report = inspect(tmp_path / "ConvNeXtPose_XS")
    assert (report.expected_variant, report.expected_from) == ("xs", "file name")


def test_archive_member_is_labeled_by_its_name(tiny_state, tmp_path):
    path = packed(tmp_path / "backup.zip", {"ConvNeXtPose_L.pth": _released_tiny(tmp_path, tiny_state)})
    assert inspect(path).expected_variant == "l"


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_unzipped_folder_tensors_stay_in_mapped_files_until_touched(tiny_state, tmp_path):
    root = unzipped(_released_tiny(tmp_path, tiny_state), tmp_path / "extracted")
    tensors = read(root).tensors()
    ranges = [r for f in (root / "data").iterdir() for r in _mapped_ranges(f.resolve())]
    pointers = [t.untyped_storage().data_ptr() for t in tensors.values() if t.numel()]
    # Every storage points into a map of its data/N file: no tensor data was copied.
    assert ranges and all(any(a <= p < b for a, b in ranges) for p in pointers)


# ---------------------------------------------------------------- refused folders and archives


# What a refusal of code must say: what it is, the callable torch found (RunsCode's `open`),
# and that nothing ran.
REFUSED_CODE = ("refused: its pickle calls code", "GLOBAL io.open", "nothing in it was run")


def _safetensors_reason(data: bytes) -> str:
    """safetensors' own first line about `data`, read without cnp."""
    from safetensors.torch import load as load_safetensors

    with pytest.raises(Exception) as raised:
        load_safetensors(data)
    return str(raised.value).splitlines()[0]


def _bad_form(kind, tmp_path, state):
    """(path to read, the path the message names, the facts the message must carry)."""
    root = unzipped(_released_tiny(tmp_path, state), tmp_path / "extracted")
    if kind == "folder-without-data.pkl":
        (root / "data.pkl").unlink()
        return root.parent, root, ("data.pkl", "missing")
    if kind == "folder-missing-a-record":
        (root / "data" / "3").unlink()
        return root, root, ("data/3", "missing")
    if kind == "folder-with-a-truncated-record":
        (root / "data" / "3").write_bytes(b"\0" * 4)
        return root, root, ("data/3", "4 bytes")
    if kind == "folder-one-level-down-missing-a-record":  # named: the folder holding data.pkl
        (root / "data" / "3").unlink()
        return root.parent, root, ("data/3", "missing")
    if kind == "folder-with-a-pickle-safe-loading-rejects":
        (root / "data.pkl").write_bytes(b"\x80\x02\x82\x01.")  # EXT1: no safe unpickler runs it
        return root, root, ("damaged unzipped checkpoint", "Unsupported operand 130")
    if kind == "folder-naming-a-record-outside-it":
        pickled = (root / "data.pkl").read_bytes()  # protocol 2: no frames, strings may grow
        (root / "data.pkl").write_bytes(pickled.replace(b"X\x01\x00\x00\x000", b"X\x09\x00\x00\x00../secret", 1))
        return root, root, ("data/../secret",)
    if kind == "folder-with-code":
        torch.save({"network": RunsCode(tmp_path / "ran")}, tmp_path / "code.pth")
        code = unzipped(tmp_path / "code.pth", tmp_path / "code")
        return code, code, REFUSED_CODE
    if kind == "folder-with-two-checkpoints":
        unzipped(_released_tiny(tmp_path, state), tmp_path / "extracted" / "other")
        (tmp_path / "extracted" / "other" / "snapshot_83.pth").rename(tmp_path / "extracted" / "second")
        return tmp_path / "extracted", tmp_path / "extracted", ("snapshot_83.pth", "second")
    if kind == "archive-with-two-checkpoints":
        path = packed(tmp_path / "two.tar", {"a.pth": tmp_path / "release" / "ConvNeXtPose_T.tar",
                                             "b/snapshot_83.pth": root})
        return path, path, ("a.pth", "b/snapshot_83.pth")
    if kind == "archive-without-a-checkpoint":
        (tmp_path / "README").write_text("weights: see the release page\n")
        path = packed(tmp_path / "docs.zip", {"README": tmp_path / "README"})
        return path, path, ("no checkpoint", "README")
    if kind == "archive-with-a-damaged-member":
        (tmp_path / "cut.pth").write_bytes((tmp_path / "release" / "ConvNeXtPose_T.tar").read_bytes()[:5000])
        path = packed(tmp_path / "cut.tar.gz", {"cut.pth": tmp_path / "cut.pth"})
        return path, path, ("cut.pth", "damaged")
    if kind in ("archive-with-code-in-a-member", "archive-with-code-in-a-legacy-member"):
        if kind.endswith("legacy-member"):
            member = tmp_path / "code.pkl"
            member.write_bytes(pickle.dumps({"network": RunsCode(tmp_path / "ran")}, protocol=2))
        else:
            member = tmp_path / "code.pth"
            torch.save({"network": RunsCode(tmp_path / "ran")}, member)
        path = packed(tmp_path / "code.tar", {member.name: member})
        return path, path, (f"member {member.name}: ", *REFUSED_CODE)
    if kind == "archive-with-a-garbled-legacy-member":  # a pickle's first bytes, then noise
        (tmp_path / "garbled.pth").write_bytes(b"\x80\x02" + b"\x01noise" * 20)
        path = packed(tmp_path / "garbled.tar", {"garbled.pth": tmp_path / "garbled.pth"})
        return path, path, ("member garbled.pth: ", "not a PyTorch or safetensors checkpoint",
                            "Unsupported operand 1")
    if kind == "archive-with-a-damaged-safetensors-member":
        save_file(dict(state), tmp_path / "whole.safetensors")
        cut = (tmp_path / "whole.safetensors").read_bytes()[:-50]
        (tmp_path / "cut.safetensors").write_bytes(cut)
        path = packed(tmp_path / "cut.tar", {"cut.safetensors": tmp_path / "cut.safetensors"})
        return path, path, ("member cut.safetensors: ", "damaged safetensors file",
                            _safetensors_reason(cut))
    if kind == "gzip-of-a-file":
        import gzip
        path = tmp_path / "a.pth.gz"
        path.write_bytes(gzip.compress((tmp_path / "release" / "ConvNeXtPose_T.tar").read_bytes()))
        return path, path, ("gz", "not a readable tar archive")
    if kind == "truncated-archive":
        path = packed(tmp_path / "whole.tar.gz", {"a.pth": tmp_path / "release" / "ConvNeXtPose_T.tar"})
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path, path, ("damaged tar.gz archive",)
    if kind == "torch-pre-1.0-tar":  # torch's own reader would unpickle it unsafely
        for name in ("sys_info", "pickle", "storages", "tensors"):
            (tmp_path / name).write_bytes(pickle.dumps({}, protocol=2))
        path = packed(tmp_path / "old.pth", {n: tmp_path / n for n in ("sys_info", "pickle", "storages", "tensors")})
        return path, path, ("pre-1.0",)
    raise AssertionError(kind)


BAD_FORMS = ["folder-without-data.pkl", "folder-missing-a-record", "folder-one-level-down-missing-a-record",
             "folder-with-a-pickle-safe-loading-rejects", "folder-with-a-truncated-record",
             "folder-naming-a-record-outside-it", "folder-with-code", "folder-with-two-checkpoints",
             "archive-with-two-checkpoints", "archive-without-a-checkpoint",
             "archive-with-a-damaged-member", "archive-with-code-in-a-member",
             "archive-with-code-in-a-legacy-member", "archive-with-a-garbled-legacy-member",
             "archive-with-a-damaged-safetensors-member", "truncated-archive", "gzip-of-a-file",
             "torch-pre-1.0-tar"]


@pytest.mark.parametrize("kind", BAD_FORMS)
def test_bad_form_raises_one_line_naming_path_and_problem(kind, tmp_path, tiny_state):
    path, named, facts = _bad_form(kind, tmp_path, tiny_state)
    with pytest.raises(CheckpointError) as raised:
        inspect(path)
    message = str(raised.value)
    assert message.startswith(f"{named}: ") and "\n" not in message
    assert all(fact in message for fact in facts), facts


@pytest.mark.parametrize("kind", BAD_FORMS)
def test_bad_form_exits_2_with_one_line(kind, tmp_path, tiny_state, cli):
    path, named, _ = _bad_form(kind, tmp_path, tiny_state)
    run = cli("inspect", path)
    assert run.code == 2 and run.err.count("\n") == 1 and run.err.startswith(f"cnp: error: {named}: ")


@pytest.mark.parametrize("kind", BAD_FORMS)
def test_bad_form_is_refused_by_load_without_creating_anything(kind, tmp_path, tiny_state):
    path, _, _ = _bad_form(kind, tmp_path, tiny_state)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(CheckpointError):
        load(path)
    assert sorted(tmp_path.rglob("*")) == before and not (tmp_path / "ran").exists()


# ---------------------------------------------------------------- half precision


@pytest.fixture(params=[torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def half_file(request, tiny_state, tmp_path):
    half = {k: t.to(request.param) if t.is_floating_point() else t for k, t in tiny_state.items()}
    return save_official(half, tmp_path / "half.tar"), half


def test_half_precision_dtypes_are_reported(half_file):
    path, half = half_file
    assert inspect(path).dtypes == Counter(str(t.dtype).removeprefix("torch.") for t in half.values())


def test_half_precision_file_loads_its_values_widened(half_file):
    path, half = half_file
    loaded = load(path).state_dict()
    assert all(torch.equal(loaded[k], half[k].to(loaded[k].dtype)) for k in half)


def test_half_precision_dtypes_appear_in_json(half_file, cli):
    import json

    (row,) = json.loads(cli("inspect", "--json", half_file[0]).out)
    assert set(row["dtypes"]) == {str(next(t.dtype for t in half_file[1].values()
                                           if t.is_floating_point())).removeprefix("torch."), "int64"}
