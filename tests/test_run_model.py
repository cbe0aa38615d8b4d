"""Running a user's model once and observing it (cnp.run_model), on toy models whose sizes
are known by construction: what reaches each head layer and the final layer, which tensor
is taken for heatmaps and for coordinates, and what a failing model is reported as.

tests/test_cli_check.py runs whole ConvNeXtPose implementations through the same code;
these models are small enough to put each behaviour in a line.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnp.run_model import run_model

IMAGE = torch.zeros(1, 3, 16, 16)
LAYER_KEYS = ["head.layer1.weight", "head.layer2.weight"]
FINAL_KEY = "head.final.weight"


class Head(nn.Module):
    """layer1 at 4x4, ×2 upsampling, layer2 at 8x8, final 1×1 conv: 5 "joints" × 1 depth."""

    def __init__(self):
        super().__init__()
        self.layer1, self.layer2 = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
        self.final = nn.Conv2d(4, 5, 1)

    def forward(self, x):
        x = nn.functional.interpolate(self.layer1(x), scale_factor=2)
        return self.final(self.layer2(x))


class Split(nn.Module):
    """The official layout: `backbone` and `head` children; forward returns coordinates."""

    def __init__(self, forward_error: Exception | None = None):
        super().__init__()
        self.backbone, self.head = nn.Conv2d(3, 4, 4, stride=4), Head()
        self.forward_error = forward_error

    def forward(self, image):
        if self.forward_error is not None:
            raise self.forward_error
        return coordinates(self.head(self.backbone(image)))


class Whole(nn.Module):
    """No backbone/head split; forward returns what `returns` makes of the heatmaps."""

    def __init__(self, returns=lambda heatmaps: heatmaps):
        super().__init__()
        self.stem, self.head, self.returns = nn.Conv2d(3, 4, 4, stride=4), Head(), returns

    def forward(self, image):
        return self.returns(self.head(self.stem(image)))


def coordinates(heatmaps):
    return heatmaps.flatten(2).mean(-1, keepdim=True).expand(-1, -1, 3)  # (N, 5, 3)


def test_sizes_into_each_head_layer_and_the_final_layer():
    assert run_model(Split(), IMAGE, LAYER_KEYS, FINAL_KEY).sizes == ((4, 4), (8, 8), (8, 8))


def test_a_layer_run_twice_reports_its_first_input():
    class Twice(Whole):
        def forward(self, image):
            features = self.stem(image)
            self.head.layer1(features)  # at 4x4, then again at 8x8
            return self.head(nn.functional.interpolate(features, scale_factor=2))

    assert run_model(Twice(), IMAGE, LAYER_KEYS, FINAL_KEY).sizes[0] == (4, 4)


def test_heatmaps_and_coordinates_of_the_official_layout():
    run = run_model(Split(), IMAGE, LAYER_KEYS, FINAL_KEY)
    assert (tuple(run.heatmaps.shape), tuple(run.coords.shape)) == ((1, 5, 8, 8), (1, 5, 3))
    assert (run.coords_note, run.error) == ("", "")  # nothing to explain


def test_a_forward_returning_coordinates_only_gives_the_final_layers_heatmaps():
    run = run_model(Whole(returns=coordinates), IMAGE, LAYER_KEYS, FINAL_KEY)
    assert tuple(run.heatmaps.shape) == (1, 5, 8, 8)  # not a head layer's (1, 4, ...)
    assert (tuple(run.coords.shape), run.coords_note) == ((1, 5, 3), "")


def test_the_final_layer_alone_gives_the_heatmaps():
    run = run_model(Whole(returns=coordinates), IMAGE, [None, None], FINAL_KEY)
    assert run.sizes == (None, None, (8, 8)) and tuple(run.heatmaps.shape) == (1, 5, 8, 8)


def test_without_a_final_layer_a_forward_of_coordinates_gives_no_heatmaps():
    run = run_model(Whole(returns=coordinates), IMAGE, LAYER_KEYS, None)
    assert (run.sizes, run.heatmaps, run.error) == (((4, 4), (8, 8), None), None, "")
    assert tuple(run.coords.shape) == (1, 5, 3)


def test_coordinates_are_found_in_a_returned_tuple():
    run = run_model(Whole(returns=lambda h: ("heatmaps follow", h, coordinates(h))), IMAGE,
                    LAYER_KEYS, FINAL_KEY)
    assert tuple(run.coords.shape) == (1, 5, 3)


@pytest.mark.parametrize("returns", [lambda h: h, lambda h: h.flatten(2)[..., :4],
                                     lambda h: coordinates(h)[0]],
                         ids=["heatmaps", "last-axis-not-3", "not-batched"])
def test_a_forward_without_coordinates_says_so(returns):
    run = run_model(Whole(returns=returns), IMAGE, LAYER_KEYS, FINAL_KEY)
    assert run.coords is None
    assert run.coords_note == "forward returned no (N, joints, 3) tensor"


def test_a_forward_that_raises_after_the_heatmaps_keeps_them():
    # The official forward calls .cuda() in soft-argmax: heatmaps still come from
    # head(backbone(x)); only the coordinates are missing, and the note says why.
    run = run_model(Split(forward_error=RuntimeError("Torch not compiled with CUDA")), IMAGE,
                    LAYER_KEYS, FINAL_KEY)
    assert tuple(run.heatmaps.shape) == (1, 5, 8, 8) and run.coords is None
    assert run.coords_note == "forward raised RuntimeError: Torch not compiled with CUDA"


@pytest.mark.parametrize("error, reported", [
    (ValueError("bad\n   shape  (1, 2)"), "ValueError: bad shape (1, 2)"),
    (ValueError(), "ValueError"),
    (ValueError("x" * 300), "ValueError: " + "x" * 200),
], ids=["whitespace", "no-message", "long"])
def test_a_model_that_cannot_run_is_one_line(error, reported):
    def fail(_):
        raise error

    run = run_model(Whole(returns=fail), IMAGE, LAYER_KEYS, FINAL_KEY)
    assert (run.heatmaps, run.coords, run.coords_note) == (None, None, "")
    assert run.error == f"running forward raised {reported}"
    assert run.sizes == ((4, 4), (8, 8), (8, 8))  # what was measured before it raised


def test_the_official_layout_that_cannot_run_names_head_of_backbone():
    model = Split()
    model.backbone = nn.Conv2d(1, 4, 4, stride=4)  # 3-channel images do not fit
    run = run_model(model, IMAGE, LAYER_KEYS, FINAL_KEY)
    assert run.error.startswith("running head(backbone(x)) raised RuntimeError: ")


@pytest.mark.parametrize("key", [None, "weight", "head.absent.weight"],
                         ids=["no-key", "no-module-part", "no-such-module"])
def test_a_layer_key_that_names_no_module_measures_nothing(key):
    run = run_model(Split(), IMAGE, [key, LAYER_KEYS[1]], FINAL_KEY)
    assert run.sizes == (None, (8, 8), (8, 8)) and run.error == ""


def test_hooks_are_removed_after_the_run():
    model = Split()
    run_model(model, IMAGE, LAYER_KEYS, FINAL_KEY)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("dtype, device", [(torch.float64, "cpu"), (torch.float32, "meta")],
                         ids=["float64", "meta"])
def test_the_image_follows_the_models_dtype_and_device(dtype, device):
    run = run_model(Split().to(device, dtype), IMAGE, LAYER_KEYS, FINAL_KEY)
    assert run.error == ""
    assert (run.heatmaps.dtype, run.heatmaps.device.type) == (dtype, device)


def test_a_model_without_parameters_runs_on_the_image_as_given():
    class Parameterless(nn.Module):
        def forward(self, image):
            return image * 2

    run = run_model(Parameterless(), IMAGE, LAYER_KEYS, FINAL_KEY)
    assert (run.error, tuple(run.heatmaps.shape), run.sizes) == ("", (1, 3, 16, 16), (None,) * 3)


def test_heatmaps_a_forward_returns_are_taken_over_the_final_layers():
    # The model's own heatmaps (here upsampled after the final layer) are what it outputs.
    upsampled = Whole(returns=lambda h: nn.functional.interpolate(h, scale_factor=2))
    run = run_model(upsampled, IMAGE, LAYER_KEYS, FINAL_KEY)
    assert tuple(run.heatmaps.shape) == (1, 5, 16, 16)
