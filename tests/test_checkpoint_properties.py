"""Properties over random ConvNeXtPose specs, and a fuzzer for the inspector."""

from __future__ import annotations

import dataclasses
import math
import re
import tempfile
from pathlib import Path

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from cnp import CheckpointError, build, inspect, load
from cnp.checkpoints import from_state_dict, infer
from cnp.testing import seeded_model
from checkpoint_files import TINY, official_state, save_official, unzipped
from strategies import variant_specs

CONVENTION_SIDE = 256 // 32  # heatmap side before upsampling, at the released 256x256 input


def conventional(spec, count: int):
    """The spec made to follow the released models' convention: cubic volumes at 256x256
    (depth_dim = heatmap side = 8·2^count) with the first `count` head layers upsampling."""
    head = tuple(dataclasses.replace(layer, upsample=2 if i < count else 1)
                 for i, layer in enumerate(spec.head))
    return dataclasses.replace(spec, head=head, depth_dim=CONVENTION_SIDE * 2 ** count,
                               input_size=(256, 256))


@given(spec=variant_specs(), upsampling_layers=st.none() | st.integers(0, 3))
def test_architecture_inferred_from_a_state_dict_is_the_spec(spec, upsampling_layers):
    if upsampling_layers is not None:
        spec = conventional(spec, upsampling_layers)
    inferred = infer(from_state_dict(build(spec, "meta").state_dict()), spec.joint_num)

    # Everything stored comes back; the input size is in no file (the convention's 256x256).
    recovered = inferred.spec(spec.name, head_upsample=spec.head_upsample)
    assert recovered == dataclasses.replace(
        spec, backbone=dataclasses.replace(spec.backbone, name=spec.name), input_size=(256, 256))
    # Upsampling is never stored: it is inferred from depth_dim when depth_dim = 8·2^U,
    # reported unknown otherwise, and right whenever the spec follows the convention.
    cubic = math.log2(spec.depth_dim / CONVENTION_SIDE) in (0, 1, 2, 3)
    assert inferred.upsample_basis == ("inferred" if cubic else "unknown")
    assert (inferred.head_upsample is None) == (not cubic)
    if upsampling_layers is not None:
        assert inferred.head_upsample == spec.head_upsample


@given(spec=variant_specs(),
       form=st.sampled_from(["official", "positional", "legacy", "safetensors", "unzipped"]))
def test_load_of_a_saved_random_spec_round_trips_bit_exact(spec, form):
    state = seeded_model(spec).state_dict()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "random.tar"
        if form in ("official", "positional", "unzipped"):
            save_official(state, path, positional_head=form == "positional")
            if form == "unzipped":
                path = unzipped(path, Path(directory) / "extracted")
        elif form == "legacy":
            torch.save({"network": official_state(state)}, path, _use_new_zipfile_serialization=False)
        else:
            path = path.with_suffix(".safetensors")
            save_file(dict(state), path)
        loaded = load(path, variant=spec).state_dict()
    assert list(loaded) == list(state)
    assert all(loaded[k].dtype == state[k].dtype and torch.equal(loaded[k], state[k]) for k in state)


# ---------------------------------------------------------------- fuzzing the inspector

TINY_STATE = official_state(seeded_model(TINY).state_dict())
KEYS = list(TINY_STATE)
# Any key, or (as often) a convolution weight: the tensors the architecture is read from.
index = st.one_of(st.integers(0, len(KEYS) - 1),
                  st.sampled_from([i for i, k in enumerate(KEYS) if TINY_STATE[k].dim() == 4]))
mutations = st.one_of(
    st.tuples(st.just("delete"), index),
    st.tuples(st.just("rename"), index, st.text("abcdnorm._0123456789", min_size=1, max_size=12)),
    st.tuples(st.just("renumber"), index, st.integers(0, 12)),
    st.tuples(st.just("reshape"), index, st.lists(st.integers(0, 5), max_size=4)),
    st.tuples(st.just("dtype"), index, st.sampled_from(
        [torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.uint8, torch.bool])),
    st.tuples(st.just("nonfinite"), index, st.sampled_from([math.nan, math.inf, -math.inf])),
)


def mutate(state: dict, mutation) -> None:
    kind, position, *arg = mutation
    key = KEYS[position]
    if key not in state:  # already deleted or renamed
        return
    if kind == "delete":
        del state[key]
    elif kind == "rename":
        state[arg[0]] = state.pop(key)
    elif kind == "renumber":  # backbone.stages.2.1.… → backbone.stages.2.7.…: keeps the namespace
        state[re.sub(r"\.\d+\.", f".{arg[0]}.", key, count=1)] = state.pop(key)
    elif kind == "reshape":
        state[key] = torch.zeros(arg[0], dtype=state[key].dtype)
    elif kind == "dtype":
        state[key] = state[key].to(arg[0])
    elif state[key].numel():  # nonfinite
        tensor = state[key].clone() if state[key].is_floating_point() else state[key].float()
        tensor.view(-1)[0] = arg[0]
        state[key] = tensor


def nonfinite_counts(state: dict) -> list[int]:
    counts = [int((~torch.isfinite(t)).sum()) for t in state.values() if t.is_floating_point()]
    return sorted(n for n in counts if n)


STEM = KEYS.index("module.backbone.downsample_layers.0.0.weight")


@settings(max_examples=2 * settings().max_examples)
# Always tried: the tensors the architecture is read from, made scalar or empty, and NaN.
@example(mutation_list=[("reshape", STEM, [])], form="zip", keep=None)
@example(mutation_list=[("reshape", STEM, [0, 3, 4, 4])], form="safetensors", keep=None)
@example(mutation_list=[("nonfinite", STEM, math.nan)], form="legacy", keep=None)
@example(mutation_list=[], form="unzipped", keep=0.5)
@given(mutation_list=st.lists(mutations, max_size=4),
       form=st.sampled_from(["zip", "legacy", "safetensors", "unzipped"]), keep=st.none() | st.floats(0, 1))
def test_inspector_reports_or_raises_only_its_own_error(mutation_list, form, keep):
    state = dict(TINY_STATE)
    for mutation in mutation_list:
        mutate(state, mutation)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / ("fuzzed.safetensors" if form == "safetensors" else "fuzzed.pth")
        if form == "safetensors":
            save_file(state, path)
        else:
            torch.save({"network": state}, path, _use_new_zipfile_serialization=form != "legacy")
        if form == "unzipped":
            path = unzipped(path, Path(directory) / "extracted")
        if keep is not None:  # a file cut short: for a folder, its pickle or its largest record
            cut = path if form != "unzipped" else (path / "data.pkl" if keep < 0.5 else max(
                (path / "data").iterdir(), key=lambda f: f.stat().st_size))
            cut.write_bytes(cut.read_bytes()[: int(cut.stat().st_size * keep)])
        try:
            report = inspect(path, fingerprints=True)
        except CheckpointError as error:  # anything else fails the test
            assert "\n" not in str(error) and str(error).startswith(str(path))
            return
    assert sorted(report.scan.nonfinite.values()) == nonfinite_counts(state)
    if nonfinite_counts(state):
        assert not report.match and "values.nonfinite" in {d.check for d in report.differences}
