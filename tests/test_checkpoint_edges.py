"""Checkpoint edge cases a user meets: a safetensors file under another name or with a
damaged header, a file whose upsampling no convention gives, NaN weights in a file that is
also the wrong variant, non-finite values in every float dtype, a pickle that safe loading
rejects (also where the environment turns safe loading off), a file saved on a GPU, the
manifest snapshots store, test ids, and a file departing from its label in one respect."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import struct
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cnp import VARIANTS, CheckpointError, inspect, load
from cnp.checkpoints import infer_upsample, manifest, read
from cnp.identify import case_id
from cnp.model import build
from cnp.testing import seeded_model
from checkpoint_files import (TINY, RunsCode, edited_records, official_state, packed, save_official,
                              sha256_of, unzipped)
from spec_page import SPEC_PAGE


def _safetensors_bytes(header: bytes, declared: int | None = None) -> bytes:
    """A safetensors file: 8-byte little-endian header length, then the JSON header."""
    return struct.pack("<Q", len(header) if declared is None else declared) + header


def test_safetensors_under_another_name_is_read_by_its_content(tiny_state, tmp_path):
    path = tmp_path / "weights.bin"
    save_file(dict(tiny_state), path)
    contents = read(path)
    assert contents.format == "safetensors" and set(contents.table) == set(tiny_state)


def test_safetensors_header_reaching_the_end_of_the_file_is_safetensors(tmp_path):
    # The header may fill the file exactly (no tensor data): still safetensors, refused as such.
    path = tmp_path / "empty.bin"
    path.write_bytes(_safetensors_bytes(b'{"__metadata__":{"format":"pt"}}'))
    with pytest.raises(CheckpointError, match="safetensors file holds no tensors") as error:
        read(path)
    assert error.value.path == str(path)


@pytest.mark.parametrize("name, problem", [
    ("odd.bin", "not a PyTorch or safetensors checkpoint"),  # by content: no safetensors file
    ("odd.safetensors", "damaged safetensors file"),  # by name: what the user meant, damaged
])
def test_a_header_longer_than_the_file_is_safetensors_only_by_name(name, problem, tmp_path):
    header = b'{"__metadata__":{"format":"pt"}}'
    path = tmp_path / name
    path.write_bytes(_safetensors_bytes(header, declared=len(header) + 1))
    with pytest.raises(CheckpointError, match=problem):
        read(path)



@pytest.mark.parametrize("data, problem", [
    (_safetensors_bytes(b"{"), "damaged safetensors file"),  # the shortest: one header byte
    (_safetensors_bytes(b"{}", declared=0), "not a PyTorch or safetensors checkpoint"),
], ids=["one-byte-header", "zero-length-header"])
def test_the_shortest_safetensors_header_is_one_byte(data, problem, tmp_path):
    # By content, under another name: a declared header of at least one byte that the file
    # holds, starting with "{". Zero bytes of header is no safetensors file.
    path = tmp_path / "odd.bin"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=problem):
        read(path)

@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
def test_a_file_that_cannot_be_opened_is_refused_with_the_systems_reason(tmp_path):
    # A socket cannot be opened for reading, even by root (who reads any unreadable file).
    path = tmp_path / "weights.pth"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(OSError) as reason:
            open(path, "rb")
        with pytest.raises(CheckpointError) as error:
            read(path)
    assert error.value.path == str(path)
    assert error.value.problem == f"cannot read: {reason.value.strerror}"


@pytest.fixture(scope="module")
def depth_24_file(tmp_path_factory):
    """A consistent ConvNeXtPose whose depth_dim 24 is no heatmap side 8·2^U."""
    spec = dataclasses.replace(TINY, name="depth24", depth_dim=24)
    return spec, save_official(seeded_model(spec).state_dict(), tmp_path_factory.mktemp("d24") / "a.tar")


def test_load_refuses_a_file_whose_upsampling_cannot_be_inferred(depth_24_file):
    _, path = depth_24_file
    with pytest.raises(CheckpointError) as error:
        load(path)
    message = str(error.value)
    assert error.value.path == str(path)
    assert "upsampling" in message and "depth_dim 24" in message and "variant=" in message


def test_load_with_a_spec_for_such_a_file_takes_its_upsampling(depth_24_file):
    spec, path = depth_24_file
    model = load(path, spec)
    assert model.spec == spec


def test_nonfinite_values_are_reported_beside_architecture_differences(tiny_state, tmp_path):
    # A file named for XS holding the tiny model with a NaN: both facts are reported.
    state = dict(tiny_state)
    weight = state["head.final_layer.weight"].clone()
    weight[0, 0, 0, 0] = float("nan")
    state["head.final_layer.weight"] = weight
    report = inspect(save_official(state, tmp_path / "ConvNeXtPose_XS.tar"), fingerprints=True)
    checks = {d.check: d for d in report.differences}
    assert {"backbone.depths", "backbone.dims", "values.nonfinite"} <= set(checks)
    nonfinite = checks["values.nonfinite"]
    # None expected, one found, a failure, measured against the spec (finite weights).
    assert (nonfinite.expected, nonfinite.found, nonfinite.ok, nonfinite.source,
            nonfinite.basis) == (0, {"head.final_layer.weight": 1}, False, "spec", "measured")


def test_inspect_text_says_the_upsampling_is_unknown_and_why(depth_24_file, cli):
    _, path = depth_24_file
    [line] = [line for line in cli("inspect", path).out.splitlines()
              if line.lstrip().startswith("upsampling")]
    assert not re.match(r"\s*upsampling \d", line)  # no factors: none can be inferred
    assert "depth_dim 24" in line


def _torch_zip_with_pickle(path, pickled: bytes):
    """A torch zip file whose data.pkl is `pickled` (its other records as torch wrote them)."""
    torch.save({"epoch": 1}, path)
    return edited_records(path, lambda name, data: pickled if name.endswith("/data.pkl") else data)


@pytest.mark.parametrize("pickled, reason", [
    (b"\x80\x02\x82\x01.", "Unsupported operand 130"),  # EXT1: no safe unpickler runs it
    (b"\x80\x02(X\x03\x00\x00\x00footQ.", "Only persistent_load of storage is allowed"),
], ids=["unsupported-opcode", "record-that-is-not-a-storage"])
def test_a_pickle_safe_loading_rejects_is_refused_with_torchs_reason(pickled, reason, tmp_path):
    # torch's message is a page about weights_only; the line that matters is its reason.
    path = _torch_zip_with_pickle(tmp_path / "odd.pth", pickled)
    with pytest.raises(CheckpointError) as error:
        read(path)
    assert error.value.path == str(path) and reason in error.value.problem
    assert error.value.problem.startswith("damaged or truncated PyTorch zip archive")
    assert "weights_only=True" in error.value.problem and "\n" not in str(error.value)


def _with_values(state, key, dtype, values):
    """`state` with every floating tensor in `dtype` and the first elements of `key` set."""
    changed = {k: t.to(dtype) if t.is_floating_point() else t for k, t in state.items()}
    flat = changed[key].flatten().clone()
    flat[: len(values)] = torch.tensor(values, dtype=torch.float64).to(dtype)
    changed[key] = flat.reshape(changed[key].shape)
    return changed


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64],
                         ids=["float16", "bfloat16", "float32", "float64"])
def test_nonfinite_values_are_counted_in_every_float_dtype(dtype, tiny_state, tmp_path):
    values = [float("nan"), float("inf"), -float("inf")]
    state = _with_values(tiny_state, "head.final_layer.weight", dtype, values)
    report = inspect(save_official(state, tmp_path / "a.tar"), fingerprints=True)
    assert report.scan.nonfinite == {"head.final_layer.weight": 3}


def test_a_float64_value_beyond_float32_range_is_finite(tiny_state, tmp_path):
    state = _with_values(tiny_state, "head.final_layer.weight", torch.float64, [1e300, -1e300])
    report = inspect(save_official(state, tmp_path / "a.tar"), fingerprints=True)
    assert report.scan.nonfinite == {}


@pytest.mark.parametrize("values", [[3e38, 3e38], [float("inf"), -float("inf")]],
                         ids=["sum-overflows", "infinities-cancel"])
def test_counting_nonfinite_values_warns_nothing(values, tiny_state, tmp_path):
    # A user's inspect output has no numpy RuntimeWarning in it, whatever the values.
    state = _with_values(tiny_state, "head.final_layer.weight", torch.float32, values)
    path = save_official(state, tmp_path / "a.tar")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inspect(path, fingerprints=True)


def test_the_manifest_describes_every_tensor_by_its_official_name(tiny_state, tmp_path):
    # What `pytest --cnp-checkpoints` snapshots: a reviewer reads these names in a diff.
    path = save_official(tiny_state, tmp_path / "a.tar", epoch=83)
    found = manifest(path)
    assert (found["format"], found["epoch"]) == ("torch-zip", 83)
    assert found["key_layout"] == {"wrapper": "network", "prefixes": ("module.",),
                                   "head_keys": "named"}
    assert found["tensors"] == {
        key: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
              "numel": t.numel(),
              "sha256": sha256_of(t)}
        for key, t in tiny_state.items()}


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.uint16,
                                   torch.uint32, torch.uint64, torch.complex64, torch.bool],
                         ids=lambda dtype: str(dtype).removeprefix("torch."))
def test_a_safetensors_file_names_each_dtype_as_torch_does(dtype, tmp_path):
    # The same tensors in a .pth and a .safetensors file read with the same dtypes.
    save_file({"w": torch.zeros(3, dtype=dtype)}, tmp_path / "a.safetensors")
    torch.save({"w": torch.zeros(3, dtype=dtype)}, tmp_path / "a.pth")
    assert read(tmp_path / "a.safetensors").dtypes == read(tmp_path / "a.pth").dtypes == \
        {str(dtype).removeprefix("torch."): 1}


def _on_a_gpu(pickled: bytes) -> bytes:
    """Pickle bytes as a CUDA machine writes them: every storage located on "cuda:0"
    (protocol 2: a location is a BINUNICODE string, its length first)."""
    return pickled.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")


@pytest.mark.parametrize("form", ["file", "unzipped-folder", "archive-member", "legacy-archive-member"])
def test_a_checkpoint_saved_on_a_gpu_loads_on_the_cpu(form, tiny_state, tmp_path):
    # The released files were written on GPUs; cnp reads them on machines without one.
    path = edited_records(save_official(tiny_state, tmp_path / "gpu.tar"),
                          lambda name, data: _on_a_gpu(data) if name.endswith("/data.pkl") else data)
    if form == "legacy-archive-member":  # the older format pickles the locations inline
        torch.save({"network": official_state(tiny_state)}, path, _use_new_zipfile_serialization=False)
        path.write_bytes(_on_a_gpu(path.read_bytes()))
    if form == "unzipped-folder":
        path = unzipped(path, tmp_path / "extracted")
    elif form != "file":
        path = packed(tmp_path / "release.tar.gz", {"gpu.tar": path})
    loaded = load(path).state_dict()
    assert all(torch.equal(loaded[key], tiny_state[key]) for key in tiny_state)


class _CallsGetcwd:
    """Unpickling this with plain pickle would call os.getcwd: torch blocks its module."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_a_pickle_calling_into_a_blocked_module_is_refused_as_code(tmp_path):
    path = tmp_path / "code.pth"
    torch.save({"network": _CallsGetcwd()}, path)
    with pytest.raises(CheckpointError) as error:
        read(path)
    assert error.value.problem.startswith("refused: its pickle calls code")
    assert "GLOBAL posix.getcwd" in error.value.problem or "GLOBAL nt.getcwd" in error.value.problem


def test_a_damaged_safetensors_file_is_refused_with_safetensors_reason(tiny_state, tmp_path):
    path = tmp_path / "cut.safetensors"
    save_file(dict(tiny_state), path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(Exception) as own:  # what safetensors itself says of the file
        with safe_open(path, framework="pt") as file:
            [file.get_slice(key) for key in file.keys()]
    with pytest.raises(CheckpointError) as error:
        read(path)
    assert error.value.path == str(path)
    assert f"damaged safetensors file ({str(own.value).splitlines()[0]}" in error.value.problem


def test_safetensors_keys_that_mean_the_same_tensor_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "twice.safetensors"
    save_file({"stem.0.weight": torch.zeros(3), "module.stem.0.weight": torch.ones(3)}, path)
    with pytest.raises(CheckpointError) as error:
        read(path)
    assert error.value.path == str(path)
    assert "'module.stem.0.weight'" in error.value.problem and "'stem.0.weight'" in error.value.problem


@pytest.mark.parametrize("name, expected", [
    ("ConvNeXtPose_XS.tar", "xs-ConvNeXtPose_XS.tar"),
    ("ConvNeXtPose_S.pth.tar", "s-ConvNeXtPose_S.pth.tar"),
    ("M.pth.tar.gz", "m-M.pth.tar.gz"),  # suffixes are no labels
    ("xs_backup_L.pth", "l-x_s_backup_L.pth"),  # the last label counts; -k xs must not match
    ("XS_backup_L.pth", "l-x_s_backup_L.pth"),  # -k matches either case
    ("weights.bin", "unlabeled-weights.bin"),
], ids=["xs", "s", "m-archive-suffixes", "l-after-another-label", "l-after-another-label-upper",
        "unlabeled"])
def test_a_files_test_id_starts_with_the_variant_its_name_claims(name, expected):
    # `pytest --cnp-checkpoints DIR -k xs` selects the files claiming XS, and only those.
    assert case_id(Path("release") / name) == expected


@pytest.mark.parametrize("form", ["zip-file", "legacy-file", "zip-member", "legacy-member", "folder"])
def test_code_is_refused_even_where_the_environment_turns_safe_loading_off(form, monkeypatch, tmp_path):
    # Users set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 to load old files; torch then unpickles
    # unsafely wherever a caller leaves weights_only unset. cnp never leaves it unset.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "code.pth"
    torch.save({"network": RunsCode(tmp_path / "ran")}, path,
               _use_new_zipfile_serialization=not form.startswith("legacy"))
    if form.endswith("member"):
        path = packed(tmp_path / "code.tar", {"code.pth": path})
    elif form == "folder":
        path = unzipped(path, tmp_path / "extracted")
    with pytest.raises(CheckpointError, match="refused: its pickle calls code"):
        read(path)
    assert not (tmp_path / "ran").exists()


def _xs_with(backbone=None, head=None, depth_dim=None):
    xs = VARIANTS["xs"]
    return dataclasses.replace(xs, backbone=dataclasses.replace(xs.backbone, **(backbone or {})),
                               head=head or xs.head, depth_dim=depth_dim or xs.depth_dim)


XS = SPEC_PAGE["xs"]
ONE_CHANGE = {  # a file labeled XS that departs from XS in one respect → what inspect reports
    "block-kernel": (_xs_with(backbone={"kernel": 5}), [("backbone.kernel", 7, 5, "stored")]),
    "head-kernel": (_xs_with(head=tuple(dataclasses.replace(h, kernel=5) for h in VARIANTS["xs"].head)),
                    [("head.kernels", [3, 3, 3], [5, 5, 5], "stored")]),
    "3up-volume": (_xs_with(head=tuple(dataclasses.replace(h, upsample=2) for h in VARIANTS["xs"].head),
                            depth_dim=64),
                   [("final_layer.out_channels", XS["final_out"], 18 * 64, "stored"),
                    ("depth_dim", XS["depth_dim"], 64, "stored"),
                    ("head.upsample", XS["upsample"], [2, 2, 2], "inferred")]),
}


@pytest.mark.parametrize("change", list(ONE_CHANGE))
def test_a_file_departing_from_its_label_in_one_respect_reports_just_that(change, tmp_path):
    # Each difference is a failed check against the spec, saying whether the file stores
    # the value or cnp inferred it.
    spec, expected = ONE_CHANGE[change]
    path = save_official(build(spec, "cpu").state_dict(), tmp_path / "ConvNeXtPose_XS.tar")
    differences = inspect(path).differences
    assert [(d.check, d.expected, d.found, d.basis) for d in differences] == expected
    assert all((d.ok, d.source) == (False, "spec") for d in differences)


# The cubic-volume convention (docs/spec.md): at 256x256 input the heatmap side is 8, and
# each of the first U head layers doubles it, so depth_dim = 8·2^U with U = 0..3.
@pytest.mark.parametrize("depth_dim, upsample", [(8, (1, 1, 1)), (16, (2, 1, 1)), (32, (2, 2, 1)),
                                                 (64, (2, 2, 2)), (24, None), (128, None)])
def test_upsampling_is_inferred_from_the_depth_by_the_cubic_volume_convention(depth_dim, upsample):
    found, basis, reason = infer_upsample(depth_dim)
    assert (found, basis) == ((upsample, "inferred") if upsample else (None, "unknown"))
    if upsample:  # the arithmetic, stated
        layers = upsample.count(2)
        assert f"depth_dim {depth_dim} = heatmap side 8·2^{layers} at 256x256 input" in reason
    else:  # 24 is no power-of-two multiple of 8; 128 would need four upsampling head layers
        assert f"depth_dim {depth_dim} is not 8·2^U (U = 0..3)" in reason


def test_an_unlabeled_file_expects_no_variant(tiny_state, tmp_path):
    """No variant in the file name and none asked for: nothing is expected, so the report
    names no source for an expectation (the differences are the closest variant's)."""
    report = inspect(save_official(tiny_state, tmp_path / "weights.tar"))
    assert (report.expected_variant, report.expected_from) == (None, None)
