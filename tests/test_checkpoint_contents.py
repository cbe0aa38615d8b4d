"""What a checkpoint holds around its tensors: a file with no state_dict in it is refused in
one line that says what it holds instead; the epoch is reported only when it is a number; an
in-memory state_dict reads like a file; a file matching no variant loads as what it describes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cnp import CheckpointError
from cnp.checkpoints import from_state_dict, infer, inspect, load, read
from checkpoint_files import TINY, official_state, save_official, sha256_of
from cnp.specs import HeadLayerSpec
from cnp.testing import seeded_model


def _refusal(path, reader=read) -> CheckpointError:
    """The one-line CheckpointError `reader` raises for `path`, naming it."""
    with pytest.raises(CheckpointError) as error:
        reader(path)
    assert error.value.path == str(path) and "\n" not in str(error.value)
    return error.value


def test_a_dict_without_tensors_is_refused_naming_its_first_five_keys(tmp_path):
    # A training snapshot saved without its weights: the user sees what it does hold.
    path = tmp_path / "snapshot.pth"
    torch.save({name: 1 for name in ("epoch", "lr", "optimizer", "scheduler", "loss", "seed")}, path)
    problem = _refusal(path).problem
    assert problem.startswith("no state_dict in it")
    assert "'epoch', 'lr', 'optimizer', 'scheduler', 'loss'" in problem and "'seed'" not in problem
    assert "network, state_dict, model" in problem  # where cnp looked


@pytest.mark.parametrize("saved", [{}, {"network": {}}], ids=["empty-dict", "empty-network"])
def test_an_empty_dict_is_no_state_dict(saved, tmp_path):
    path = tmp_path / "empty.pth"
    torch.save(saved, path)
    assert _refusal(path).problem.startswith("no state_dict in it")


def test_a_file_holding_no_dict_says_what_it_holds(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    problem = _refusal(path).problem
    assert problem.startswith("no state_dict in it") and "a list" in problem


@pytest.mark.parametrize("epoch, reported", [(83, 83), ("83", None), (83.0, None)],
                         ids=["int", "string", "float"])
def test_the_epoch_is_reported_only_when_it_is_an_integer(epoch, reported, tiny_state, tmp_path):
    path = tmp_path / "a.pth"
    torch.save({"epoch": epoch, "network": official_state(tiny_state)}, path)
    assert read(path).epoch == reported


def test_an_in_memory_state_dict_reads_like_a_file(tiny_state):
    # What `cnp check` inspects of a user's model: no file, the same table.
    contents = from_state_dict(official_state(tiny_state))
    assert (contents.path, contents.format, contents.layout.prefixes) == \
        ("<state_dict>", "memory", ("module.",))
    assert {key: (list(info.shape), info.dtype) for key, info in contents.table.items()} == \
        {key: (list(t.shape), str(t.dtype).removeprefix("torch.")) for key, t in tiny_state.items()}
    assert all(contents.tensors()[key] is tiny_state[key] for key in tiny_state)


def test_an_in_memory_state_dict_with_two_keys_for_one_tensor_is_refused_by_its_name():
    with pytest.raises(CheckpointError) as error:
        from_state_dict({"stem.weight": torch.zeros(1), "module.stem.weight": torch.zeros(1)},
                        name="my_model.py:build")
    assert error.value.path == "my_model.py:build" and "'module.stem.weight'" in error.value.problem


def test_a_file_matching_no_variant_loads_as_the_architecture_it_describes(tiny_state, tmp_path):
    # The tiny model is no published variant: cnp.load builds what the tensors describe,
    # named "inferred", and loads them into it.
    path = tmp_path / "a.pth"
    torch.save({"network": official_state(tiny_state)}, path)
    model = load(path)
    assert model.spec == dataclasses.replace(
        TINY, name="inferred", backbone=dataclasses.replace(TINY.backbone, name="inferred"))


# ---------------------------------------------------------------- keys and shapes that do not fit


def _saved_without(state, tmp_path, keys):
    path = tmp_path / "a.pth"
    torch.save({"network": official_state({k: t for k, t in state.items() if k not in keys})}, path)
    return path


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_missing_keys_are_listed_three_at_most_with_how_many_more(count, tiny_state, tmp_path):
    buffers = [k for k in tiny_state if k.startswith("head.") and ".norm." in k]
    removed = buffers[:count]  # in the model's key order, which the message keeps
    problem = _refusal(_saved_without(tiny_state, tmp_path, removed), inspect).problem
    listed = ", ".join(removed[:3]) + (f" (+{count - 3} more)" if count > 3 else "")
    assert problem == f"missing key{'s' if count > 1 else ''} {listed}"


def test_a_weight_the_architecture_is_read_from_is_named_when_missing(tiny_state, tmp_path):
    key = "backbone.downsample_layers.1.1.weight"  # stage 1's width is read off this tensor
    assert _refusal(_saved_without(tiny_state, tmp_path, [key]), inspect).problem == f"missing key {key}"


def test_shapes_that_describe_no_valid_model_are_refused_with_the_specs_reason(tiny_state, tmp_path):
    # 4x4 depthwise kernels: ConvNeXt's kernels are odd, so no spec has them.
    state = {k: (torch.zeros(*t.shape[:2], 4, 4) if k.endswith("dwconv.weight") and k.startswith("backbone.")
                 else t) for k, t in tiny_state.items()}
    path = tmp_path / "even.pth"
    torch.save({"network": official_state(state)}, path)
    with pytest.raises(ValueError) as reason:  # what the spec itself says of such a kernel
        dataclasses.replace(TINY.backbone, name="inferred", kernel=4)
    problem = _refusal(path, inspect).problem
    assert problem == f"its shapes describe no valid ConvNeXtPose ({reason.value})"


@pytest.mark.parametrize("shape", [[576, 16], [576, 16, 0, 1]], ids=["linear-weight", "empty-kernel"])
def test_a_weight_the_architecture_is_read_from_must_be_a_convolution(shape, tiny_state, tmp_path):
    key = "head.final_layer.weight"
    path = tmp_path / "odd.pth"
    torch.save({"network": official_state({**tiny_state, key: torch.zeros(shape)})}, path)
    assert _refusal(path, inspect).problem == f"{key} has shape {shape}, not a convolution weight"


def test_a_backbone_alone_is_a_convnextpose_without_its_head(tiny_state, tmp_path):
    # Saved from the backbone only: recognised, and the first missing head weight named.
    path = _saved_without(tiny_state, tmp_path, [k for k in tiny_state if k.startswith("head.")])
    assert _refusal(path, inspect).problem == "missing key head.deconv_layers_1.pwconv.weight"


def test_the_json_report_with_fingerprints_has_every_digest_and_the_nonfinite_counts(tiny_state, tmp_path):
    # `cnp inspect --fingerprints --json`: what a user diffs between two copies of a file.
    key = "head.final_layer.weight"
    state = {**tiny_state, key: tiny_state[key].clone().index_fill_(0, torch.tensor([0]), float("nan"))}
    data = inspect(save_official(state, tmp_path / "a.tar"), fingerprints=True).to_dict()
    assert data["nonfinite"] == {key: state[key][0].numel()}
    assert data["fingerprints"] == {name: sha256_of(t) for name, t in state.items()}


def test_another_models_state_dict_is_refused_naming_its_first_three_keys(tmp_path):
    # The user sees which model the file is for instead.
    path = tmp_path / "resnet.pth"
    torch.save({f"layer{i}.weight": torch.ones(2) for i in range(1, 6)}, path)
    problem = _refusal(path, inspect).problem
    assert problem.startswith("not a ConvNeXtPose checkpoint") and "none of its 5 keys" in problem
    assert "layer1.weight, layer2.weight, layer3.weight" in problem and "layer4" not in problem


def test_a_head_without_its_backbone_is_refused_naming_the_first_missing_backbone_key(
        tiny_state, tmp_path):
    # A head saved alone is ConvNeXtPose's, but incomplete: the message says what is missing.
    path = tmp_path / "head.pth"
    torch.save({k: v for k, v in tiny_state.items() if k.startswith("head.")}, path)
    assert _refusal(path, inspect).problem == "missing key backbone.downsample_layers.0.0.weight"


def test_one_joint_is_a_joint_count(tiny_state):
    # joint_num 1: the whole final layer is one joint's depth bins.
    inferred = infer(from_state_dict(tiny_state), joint_num=1)
    assert (inferred.joint_num, inferred.depth_dim) == (1, TINY.joint_num * TINY.depth_dim)


def _saved(state: dict, path):
    torch.save(state, path)
    return path


def test_a_head_layer_stored_by_position_and_by_name_is_refused_naming_both_keys(
        tiny_state, tmp_path):
    # deconv_layers_1.0 is deconv_layers_1.dwconv in the released M and L files: one tensor twice.
    state = {**tiny_state, "head.deconv_layers_1.0.weight":
             tiny_state["head.deconv_layers_1.dwconv.weight"]}
    problem = _refusal(_saved(state, tmp_path / "twice.pth"), inspect).problem
    assert "'head.deconv_layers_1.0.weight'" in problem
    assert "'head.deconv_layers_1.dwconv.weight'" in problem


def test_a_stage_without_blocks_is_refused_naming_the_stage(tiny_state, tmp_path):
    state = {k: v for k, v in tiny_state.items() if not k.startswith("backbone.stages.2.")}
    assert _refusal(_saved(state, tmp_path / "a.pth"), inspect).problem == "stage 2 has no blocks"


def test_blocks_of_a_fifth_stage_are_unexpected_keys(tiny_state, tmp_path):
    key = "backbone.stages.4.0.dwconv.weight"
    state = {**tiny_state, key: tiny_state["backbone.stages.3.0.dwconv.weight"]}
    assert _refusal(_saved(state, tmp_path / "a.pth"), inspect).problem == f"unexpected key {key}"


def test_each_head_layers_channels_and_kernel_are_read_from_that_layer():
    spec = dataclasses.replace(TINY, head=tuple(
        HeadLayerSpec(channels, kernel=kernel, upsample=layer.upsample)
        for layer, channels, kernel in zip(TINY.head, (24, 16, 8), (3, 5, 1))))
    inferred = infer(from_state_dict(seeded_model(spec).state_dict()))
    assert (inferred.head_channels, inferred.head_kernels) == ((24, 16, 8), (3, 5, 1))


def test_a_final_layer_not_divisible_by_the_joints_names_the_file(tiny_state, tmp_path):
    path = save_official(tiny_state, tmp_path / "a.tar")
    with pytest.raises(CheckpointError) as error:
        inspect(path, joint_num=7)
    assert error.value.path == str(path) and "joint_num 7" in error.value.problem
