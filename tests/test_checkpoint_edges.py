"""Checkpoint edge cases a user meets: a safetensors file under another name, a file whose
upsampling no convention gives, NaN weights in a file that is also the wrong variant."""

from __future__ import annotations

import dataclasses
import re
import struct

import pytest
from safetensors.torch import save_file

from cnp import CheckpointError, inspect, load
from cnp.checkpoints import read
from cnp.testing import seeded_model
from checkpoint_files import TINY, save_official


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


def test_header_longer_than_the_file_is_not_taken_for_safetensors(tmp_path):
    header = b'{"__metadata__":{"format":"pt"}}'
    path = tmp_path / "odd.bin"
    path.write_bytes(_safetensors_bytes(header, declared=len(header) + 1))
    with pytest.raises(CheckpointError, match="not a PyTorch or safetensors checkpoint"):
        read(path)


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
    assert checks["values.nonfinite"].found == {"head.final_layer.weight": 1}


def test_inspect_text_says_the_upsampling_is_unknown_and_why(depth_24_file, cli):
    _, path = depth_24_file
    [line] = [line for line in cli("inspect", path).out.splitlines()
              if line.lstrip().startswith("upsampling")]
    assert not re.match(r"\s*upsampling \d", line)  # no factors: none can be inferred
    assert "depth_dim 24" in line
