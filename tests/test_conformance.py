"""The checks of `cnp check` one by one, on the shapes and runs they read (cnp.conformance).

tests/test_cli_check.py runs whole implementations; here each check gets the one flaw it
must report (a missing key, a wrong kernel, a head that upsamples by 1.5), and the test
reads what a user would: the verdict, what was expected, what was found and the facts the
one-line detail must name. Expected values come from the spec (`get_spec`), the official
key layout of the meta-built model, or closed forms; never from the check's own output.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cnp.conformance import (check_counts, check_head, check_keys, check_numerics, check_output,
                             check_stages, check_upsampling, Reference, released_name, verify)
from cnp.model import build
from cnp.run_model import Run
from cnp.specs import get_spec
from cnp.testing import ATOL, RTOL

XS, S, M = get_spec("xs"), get_spec("s"), get_spec("m")


def shapes(spec) -> dict[str, list[int]]:
    """The official state_dict layout: names in order, with their shapes."""
    return {k: list(t.shape) for k, t in build(spec, device="meta").state_dict().items()}


def renamed(state: dict, old: str, new: str) -> dict:
    return {(new if key == old else key): shape for key, shape in state.items()}


# ---------------------------------------------------------------- keys


def test_official_keys_pass_and_the_released_file_loads_xs():
    official = shapes(XS)
    check, rename, _ = check_keys(XS, official, dict(official))
    assert (check.ok, rename) == (True, None)
    # What the JSON's expected says of the keys: the count and nothing out of place.
    assert check.expected == {"keys": len(official), "missing": [], "unexpected": [],
                              "shape_mismatched": {}, "official_order": True}
    assert check.found["keys"] == len(official)
    assert check.found["released_checkpoint_loads"] is True
    assert f"{len(official)} tensors" in check.detail and "loads strict=True" in check.detail
    assert "would not" not in check.detail and "by position" not in check.detail


def test_positional_head_names_are_official_and_match_the_released_file_m():
    official = shapes(M)
    positional = {released_name(k, "m").removeprefix("module."): s for k, s in official.items()}
    assert "head.deconv_layers_1.0.weight" in positional  # the released M file's naming
    check, rename, names = check_keys(M, official, positional)
    assert (check.ok, rename) == (True, None)
    assert names["head.deconv_layers_1.0.weight"] == "head.deconv_layers_1.dwconv.weight"
    assert check.found["released_checkpoint_loads"] is True
    assert "head layers by position" in check.detail


def test_keys_saved_from_data_parallel_match_the_released_file_xs():
    # The official code trains under DataParallel: every key starts with "module.".
    official = shapes(XS)
    check, rename, _ = check_keys(XS, official, {f"module.{k}": s for k, s in official.items()})
    assert check.found["released_checkpoint_loads"] is True
    assert rename == {f"module.{k}": k for k in official}


def test_named_head_keys_would_not_load_the_released_m_file():
    official = shapes(M)
    check, _, _ = check_keys(M, official, dict(official))
    assert check.ok is True  # the official names: the architecture is right
    assert check.found["released_checkpoint_loads"] is False
    assert "released M file would not load" in check.detail
    assert "head.deconv_layers_1.0.weight" in check.detail  # what the file has, the model not


def test_a_missing_key_is_named_xs():
    official = shapes(XS)
    user = {k: s for k, s in official.items() if k != "head.final_layer.bias"}
    check, _, _ = check_keys(XS, official, user)
    assert check.ok is False
    assert (check.found["missing"], check.found["unexpected"]) == (["head.final_layer.bias"], [])
    assert check.expected["missing"] == []
    assert "1 missing (head.final_layer.bias)" in check.detail
    assert "this model has no head.final_layer.bias" in check.detail


def test_an_unexpected_key_is_named_xs():
    official = shapes(XS)
    check, _, _ = check_keys(XS, official, {**official, "head.extra.weight": [3]})
    assert check.ok is False
    assert (check.found["missing"], check.found["unexpected"]) == ([], ["head.extra.weight"])
    assert "1 unexpected (head.extra.weight)" in check.detail
    assert "the file has no head.extra.weight" in check.detail


def test_a_key_of_another_shape_gives_both_shapes_xs():
    official = shapes(XS)
    key = "head.final_layer.weight"
    user = {**official, key: [18 * 64, *official[key][1:]]}
    check, _, _ = check_keys(XS, official, user)
    assert check.ok is False
    assert check.found["shape_mismatched"] == {key: {"expected": official[key], "found": user[key]}}
    assert f"1 of other shape ({key})" in check.detail
    assert f"the file's {key} has another shape" in check.detail


def test_keys_out_of_the_official_order_fail_xs():
    official = shapes(XS)
    keys = list(official)
    keys[0], keys[1] = keys[1], keys[0]
    check, _, _ = check_keys(XS, official, {k: official[k] for k in keys})
    assert (check.ok, check.found["official_order"], check.expected["official_order"]) == (
        False, False, True)
    assert check.detail.startswith("not in the official order")


def test_other_names_for_the_same_tensors_give_a_rename_map_xs():
    official = shapes(XS)
    user = {f"net.{k}": s for k, s in official.items()}
    check, rename, _ = check_keys(XS, official, user)
    assert check.ok is False
    assert rename == {f"net.{k}": k for k in official}
    assert f"a rename map of {len(official)} keys" in check.detail
    # Four of the missing keys: three named, the rest counted.
    assert f"{len(official)} missing ({', '.join(list(official)[:3])} and {len(official) - 3} more)" \
        in check.detail


def test_three_missing_keys_are_all_named_and_none_counted_xs():
    official = shapes(XS)
    gone = list(official)[-3:]
    check, _, _ = check_keys(XS, official, {k: s for k, s in official.items() if k not in gone})
    assert f"3 missing ({', '.join(gone)})" in check.detail and "more" not in check.detail


def test_only_the_keys_named_otherwise_are_in_the_rename_map_xs():
    official = shapes(XS)
    user = renamed(official, "head.final_layer.weight", "head.final.weight")
    _, rename, _ = check_keys(XS, official, user)
    assert rename == {"head.final.weight": "head.final_layer.weight"}


def test_a_key_misnamed_as_another_gets_a_rename_map_xs():
    # The bias of head layer 1's depthwise conv saved under its weight's positional name:
    # nothing unexpected (the name is an official one), one key missing, the same shapes
    # in order, so the map says which key to rename.
    official = shapes(XS)
    user = renamed(official, "head.deconv_layers_1.dwconv.bias", "head.deconv_layers_1.0.weight")
    check, rename, _ = check_keys(XS, official, user)
    assert (check.found["missing"], check.found["unexpected"]) == (
        ["head.deconv_layers_1.dwconv.bias"], [])
    assert rename == {"head.deconv_layers_1.0.weight": "head.deconv_layers_1.dwconv.bias"}


# ---------------------------------------------------------------- counts

def test_counts_of_the_spec_build_and_the_papers_figures_s():
    official = build(S, device="meta")
    check = check_counts(S, official, build(S, device="meta"))
    params = sum(p.numel() for p in official.parameters())
    assert check.ok is True and check.source == "spec and paper"
    # S: the paper gives 7.44M (parameters) and 7.45M (with BatchNorm buffers) in places.
    assert (check.expected["params_m"], check.expected["state_dict_m"]) == (7.44, 7.45)
    assert check.found["params"] == params and check.found["params_m"] == round(params / 1e6, 2)
    assert f"{params:,} parameters (paper 7.44M)" in check.detail


def test_counts_of_an_unpublished_architecture_come_from_the_spec_alone():
    # 17 joints (another dataset): the paper has no figures for it.
    spec = dataclasses.replace(XS, joint_num=17)
    check = check_counts(spec, build(spec, device="meta"), build(spec, device="meta"))
    assert (check.ok, check.source) == (True, "spec")
    assert "params_m" not in check.expected and "paper" not in check.detail
    assert check.detail.startswith(f"{check.found['params']:,} parameters, ")


def test_frozen_parameters_are_counted_xs():
    model = build(XS, device="meta")
    model.backbone.requires_grad_(False)
    assert check_counts(XS, build(XS, device="meta"), model).ok is True


def test_an_extra_parameter_fails_the_counts_xs():
    model = build(XS, device="meta")
    model.extra = torch.nn.Linear(2, 2, device="meta")  # 6 parameters
    check = check_counts(XS, build(XS, device="meta"), model)
    assert check.ok is False
    assert check.found["params"] - check.expected["params"] == 6
    assert "state_dict_m" not in check.expected  # XS: the paper has one figure


# ---------------------------------------------------------------- stages and head


def test_stages_are_read_from_the_block_tensors_xs():
    check = check_stages(XS, shapes(XS))
    assert check.ok is True
    assert check.found == {"depths": list(XS.backbone.depths), "dims": list(XS.backbone.dims)}
    assert f"depths {','.join(map(str, XS.backbone.depths))}" in check.detail
    assert f"dims {','.join(map(str, XS.backbone.dims))}" in check.detail


def test_a_fifth_stage_and_a_missing_block_are_counted_xs():
    view = shapes(XS)
    last = len(XS.backbone.depths) - 1
    view = {k: s for k, s in view.items() if not k.startswith(f"backbone.stages.{last}.1.")}
    view["backbone.stages.4.0.dwconv.weight"] = [512, 1, 7, 7]
    check = check_stages(XS, view)
    depths = [*XS.backbone.depths[:-1], XS.backbone.depths[-1] - 1, 1]
    assert check.ok is False
    assert check.found == {"depths": depths, "dims": [*XS.backbone.dims, 512]}


def test_a_stage_without_its_first_depthwise_conv_has_no_width_xs():
    view = {k: s for k, s in shapes(XS).items() if k != "backbone.stages.3.0.dwconv.weight"}
    check = check_stages(XS, view)
    assert check.ok is False and check.found["dims"] == [*XS.backbone.dims[:3], None]
    assert check.found["depths"] == list(XS.backbone.depths)  # its other tensors still count


def test_stages_without_backbone_tensors_are_not_checked():
    check = check_stages(XS, {"head.final_layer.weight": [576, 128, 1, 1]})
    assert (check.check, check.ok, check.found) == ("stages", None, None)
    assert check.expected == {"depths": list(XS.backbone.depths), "dims": list(XS.backbone.dims)}
    assert check.detail.startswith("not checked")


def test_the_head_is_read_layer_by_layer_xs():
    check = check_head(XS, shapes(XS))
    channels = [XS.backbone.dims[-1], *(layer.out_channels for layer in XS.head)]
    assert check.ok is True
    assert check.found == check.expected == {
        "layers": [{"in": a, "out": b, "kernel": layer.kernel}
                   for a, b, layer in zip(channels, channels[1:], XS.head)],
        "final_layer": {"in": channels[-1], "out": XS.joint_num * XS.depth_dim}}
    assert f"channels {'->'.join(map(str, channels))}" in check.detail
    assert f"final layer {XS.joint_num * XS.depth_dim}" in check.detail


def test_a_head_kernel_of_another_size_fails_xs():
    view = shapes(XS)
    key = "head.deconv_layers_2.dwconv.weight"
    view[key] = [*view[key][:2], 5, 5]
    check = check_head(XS, view)
    assert check.ok is False
    assert [layer["kernel"] for layer in check.found["layers"]] == [3, 5, 3]
    assert "kernels 3,5,3" in check.detail


@pytest.mark.parametrize("kernel", [[3, 5], [5, 3]], ids=["3x5", "5x3"])
def test_a_head_kernel_that_is_not_square_fails_xs(kernel):
    view = shapes(XS)
    key = "head.deconv_layers_1.dwconv.weight"
    view[key] = [*view[key][:2], *kernel]
    check = check_head(XS, view)
    assert check.ok is False and check.found["layers"][0]["kernel"] == kernel


def test_a_head_layer_without_its_pointwise_conv_is_none_xs():
    view = {k: s for k, s in shapes(XS).items() if not k.startswith("head.deconv_layers_3.pwconv")}
    check = check_head(XS, view)
    assert check.ok is False
    assert check.found["layers"][2] is None and check.found["layers"][1] is not None


def test_a_head_without_a_final_layer_fails_xs():
    view = {k: s for k, s in shapes(XS).items() if not k.startswith("head.final_layer")}
    check = check_head(XS, view)
    assert (check.ok, check.found["final_layer"]) == (False, None)
    assert "final layer None" in check.detail


def test_no_head_tensors_is_not_checked():
    check = check_head(XS, {"backbone.stages.0.0.dwconv.weight": [40, 1, 7, 7]})
    assert (check.check, check.ok) == ("head", None) and check.detail.startswith("not checked")
    assert check.expected == check_head(XS, shapes(XS)).expected  # the spec's, as ever
    assert check.found == {"layers": [None, None, None], "final_layer": None}


# ---------------------------------------------------------------- measured by running


def run(sizes=((8, 8), (16, 16), (32, 32), (32, 32)), heatmaps=None, coords=None, note="",
        error="") -> Run:
    return Run(tuple(sizes), heatmaps, coords, note, error)


def test_upsampling_factors_are_the_ratios_of_the_sizes_xs():
    check = check_upsampling(XS, run())
    assert (check.ok, check.expected, check.found) == (True, list(XS.head_upsample), [2, 2, 1])
    assert "x2 x2 x1" in check.detail and "8x8 -> 16x16 -> 32x32 -> 32x32" in check.detail


@pytest.mark.parametrize("after, factor", [((12, 12), [1.5, 1.5]), ((16, 8), [2.0, 1.0])],
                         ids=["not-an-integer", "not-square"])
def test_a_factor_that_is_not_one_integer_is_given_per_axis_xs(after, factor):
    check = check_upsampling(XS, run(sizes=((8, 8), after, (32, 32), (32, 32))))
    assert check.ok is False and check.found[0] == factor


@pytest.mark.parametrize("broken, why", [
    (run(error="running forward raised ValueError: bad"), "running forward raised ValueError: bad"),
    (run(sizes=((8, 8), None, (32, 32), (32, 32))), "were not found or their module did not run"),
], ids=["error", "layer-not-run"])
def test_upsampling_that_could_not_be_measured_says_why(broken, why):
    check = check_upsampling(XS, broken)
    assert (check.check, check.expected) == ("upsampling", list(XS.head_upsample))
    assert (check.ok, check.found) == (None, None)
    assert check.detail.startswith("not measured: ") and why in check.detail


def test_output_is_the_heatmap_shape_xs():
    check = check_output(XS, run(heatmaps=torch.zeros(1, 576, 32, 32)))
    assert (check.ok, check.expected, check.found) == (
        True, [XS.joint_num * XS.depth_dim, *XS.heatmap_size], [576, 32, 32])
    assert f"576x32x32 heatmaps for a 1x3x{XS.input_size[0]}x{XS.input_size[1]} image" in check.detail


def test_output_names_the_input_height_and_width_of_the_spec():
    spec = dataclasses.replace(XS, input_size=(256, 192))  # not square: which is which shows
    check = check_output(spec, run(heatmaps=torch.zeros(1, 576, 64, 48)))
    assert "for a 1x3x256x192 image" in check.detail


@pytest.mark.parametrize("error", ["running forward raised ValueError: bad", ""])
def test_no_heatmaps_fail_the_output_check(error):
    check = check_output(XS, run(error=error))
    assert (check.check, check.expected) == ("output", [XS.joint_num * XS.depth_dim, *XS.heatmap_size])
    assert (check.ok, check.found) == (False, None)
    assert check.detail == (error or "no heatmaps: neither head(backbone(x)) nor the final layer "
                                     "gave any")


# ---------------------------------------------------------------- numerics


def reference(heatmaps: torch.Tensor, coords: torch.Tensor) -> Reference:
    """cnp's reference outputs, as check_numerics reads them (no weights or image needed)."""
    return Reference(state={}, image=torch.zeros(1, 3, 1, 1), heatmaps=heatmaps, coords=coords)


def off_by(expected: torch.Tensor, units: float) -> torch.Tensor:
    """`expected` moved by `units` of the golden tolerance, ATOL + RTOL·|x|, everywhere."""
    return (expected.double() + units * (ATOL + RTOL * expected.double().abs())).float()


REFERENCE = reference(torch.linspace(-3, 3, 2 * 4 * 4).reshape(1, 2, 4, 4),
                      torch.linspace(0, 30, 6).reshape(1, 2, 3))


NUMERICS_EXPECTED = {"heatmaps": 1.0}  # at most one unit of the golden tolerance


def is_numerics(check, expected=NUMERICS_EXPECTED) -> bool:
    return (check.check, check.expected, check.source) == ("numerics", expected, "golden")


def test_numerics_in_units_of_the_golden_tolerance():
    found = run(heatmaps=off_by(REFERENCE.heatmaps, 0.5), coords=off_by(REFERENCE.coords, 3))
    check = check_numerics(found, REFERENCE, None)
    assert is_numerics(check, {"heatmaps": 1.0, "coords": 1.0}) and check.ok is False
    assert check.found["heatmaps"] == pytest.approx(0.5, abs=0.01)
    assert check.found["coords"] == pytest.approx(3, abs=0.01)
    assert f"rtol {RTOL}, atol {ATOL}" in check.detail
    assert check.detail.endswith(f"; coordinates {check.found['coords']}")


def test_numerics_are_reported_to_four_decimals():
    # Zero references: the tolerance is ATOL, so found = 0.123456·ATOL is 0.123456 units.
    zero = reference(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 3))
    found = run(heatmaps=torch.full((1, 2, 4, 4), 0.123456 * ATOL),
                coords=torch.full((1, 2, 3), 0.123456 * ATOL))
    assert check_numerics(found, zero, None).found == {"heatmaps": 0.1235, "coords": 0.1235}


def test_numerics_pass_within_the_tolerance_without_coordinates():
    found = run(heatmaps=off_by(REFERENCE.heatmaps, 0.9), note="forward returned no (N, joints, 3) tensor")
    check = check_numerics(found, REFERENCE, None)
    assert is_numerics(check) and (check.ok, list(check.found)) == (True, ["heatmaps"])
    assert "coordinates not compared: forward returned no (N, joints, 3) tensor" in check.detail


def test_numerics_at_exactly_the_tolerance_pass():
    # Zero heatmaps: the tolerance is ATOL itself; found at ATOL is 1 unit (rounded to 4
    # decimals, as reported), the largest deviation that passes.
    zero = reference(torch.zeros(1, 2, 4, 4), REFERENCE.coords)
    check = check_numerics(run(heatmaps=torch.full((1, 2, 4, 4), ATOL)), zero, None)
    assert (check.ok, check.found["heatmaps"]) == (True, 1.0)


def test_numerics_one_unit_past_the_tolerance_fail():
    check = check_numerics(run(heatmaps=off_by(REFERENCE.heatmaps, 1.1)), REFERENCE, None)
    assert check.ok is False


def test_numerics_of_heatmaps_of_another_shape_fail_naming_both():
    check = check_numerics(run(heatmaps=torch.zeros(1, 2, 8, 8)), REFERENCE, None)
    assert is_numerics(check) and (check.ok, check.found) == (False, None)
    assert "1x2x8x8" in check.detail and "1x2x4x4" in check.detail


def test_numerics_without_heatmaps_fail():
    check = check_numerics(run(), REFERENCE, None)
    assert is_numerics(check) and (check.ok, check.found) == (False, None)
    assert "heatmaps none" in check.detail


def test_numerics_are_not_checked_when_the_weights_do_not_load():
    check = check_numerics(run(heatmaps=REFERENCE.heatmaps), REFERENCE, "no official tensor 'x'")
    assert is_numerics(check) and (check.ok, check.found) == (None, None)
    assert check.detail.startswith("not checked") and "no official tensor 'x'" in check.detail


# ---------------------------------------------------------------- a whole model


LOAD_FAILED = "not checked: cnp's weights do not load into the model ("


def test_a_tensor_cnp_has_no_value_for_is_named_xs():
    model = build(XS)
    model.extra = torch.nn.Linear(2, 2)
    numerics = verify(model, "xs").check("numerics")
    assert numerics.ok is None
    assert numerics.detail == f"{LOAD_FAILED}no official tensor 'extra.weight')"


def test_tensors_of_another_shape_are_named_in_at_most_300_characters_xs():
    model = build(XS)
    head = model.head
    head.deconv_layers_3.pwconv = torch.nn.Conv2d(128, 64, 1)  # two tensors of other shape,
    head.final_layer = torch.nn.Conv2d(64, XS.joint_num * XS.depth_dim, 1)  # two more
    numerics = verify(model, "xs").check("numerics")
    assert numerics.ok is None and numerics.detail.startswith(LOAD_FAILED)
    problem = numerics.detail.removeprefix(LOAD_FAILED).removesuffix(")")
    assert "size mismatch for head.deconv_layers_3.pwconv.weight" in problem
    assert "\n" not in problem and "  " not in problem  # torch's lines, joined
    assert len(problem) == 300  # torch's message is longer: cut


def test_a_model_on_the_meta_device_is_checked_statically_xs():
    verdict = verify(build(XS, device="meta"), "xs")
    statuses = {check.check: check.ok for check in verdict.checks}
    assert {name: statuses[name] for name in ("keys", "counts", "stages", "head")} == dict.fromkeys(
        ("keys", "counts", "stages", "head"), True)
    numerics = verdict.check("numerics")
    assert numerics.ok is None and "meta device" in numerics.detail
