"""Run a user's model once on CPU and observe it: what `cnp check` measures.

Upsampling has no parameters, so it shows only while the model runs, wherever it happens
(an `nn.Upsample` child, `F.interpolate` in some `forward`): the spatial size arriving at
each head layer's first convolution and at the final layer, observed with hooks on the
modules that own those tensors, gives each head layer's factor.

Heatmaps are `head(backbone(x))` where the model has `backbone` and `head` submodules (the
official layout: its `forward` hard-codes `.cuda()` in soft-argmax, this part runs on CPU),
else the final layer's output during `model(x)`. Coordinates are what `model(x)` returns,
when it runs on CPU and returns an (N, joints, 3) tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Run:
    sizes: tuple[tuple[int, int] | None, ...]  # (h, w) into head layers 1..3, then the final layer
    heatmaps: torch.Tensor | None
    coords: torch.Tensor | None
    coords_note: str  # why coordinates were not compared, when they were not
    error: str  # why the model could not run at all; "" when it ran


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())[:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _owner(model: nn.Module, key: str | None) -> nn.Module | None:
    """The module that holds state_dict entry `key` (`a.b.weight` → module `a.b`)."""
    if key is None or "." not in key:
        return None
    try:
        return model.get_submodule(key.rsplit(".", 1)[0])
    except AttributeError:
        return None


def _split(model: nn.Module) -> bool:
    return all(isinstance(getattr(model, name, None), nn.Module) for name in ("backbone", "head"))


def _coordinates(output) -> torch.Tensor | None:
    """The first (N, joints, 3) tensor in what `forward` returned."""
    candidates = output if isinstance(output, (tuple, list)) else (output,)
    return next((t for t in candidates
                 if isinstance(t, torch.Tensor) and t.dim() == 3 and t.shape[-1] == 3), None)


def run_model(model: nn.Module, image: torch.Tensor, layer_keys: list[str | None],
              final_key: str | None) -> Run:
    """Run `model` on `image`; `layer_keys` name each head layer's first convolution weight
    and `final_key` the final layer's weight, as the user's state_dict names them."""
    owners = [_owner(model, key) for key in [*layer_keys, final_key]]
    sizes: list[tuple[int, int] | None] = [None] * len(owners)
    final_outputs: list[torch.Tensor] = []

    def size_into(index):
        def hook(module, args):
            if sizes[index] is None and args and isinstance(args[0], torch.Tensor):
                sizes[index] = tuple(args[0].shape[-2:])
        return hook

    handles = [owner.register_forward_pre_hook(size_into(i))
               for i, owner in enumerate(owners) if owner is not None]
    if owners[-1] is not None:
        handles.append(owners[-1].register_forward_hook(
            lambda module, args, output: final_outputs.append(output)))
    # The user's dtype and device (float64, a GPU): cnp's input follows the model.
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    if first is not None:
        image = image.to(first.device, first.dtype)
    split = _split(model)
    try:
        with torch.no_grad():
            output = model.head(model.backbone(image)) if split else model(image)
    except Exception as error:  # noqa: BLE001 - the user's code: report, do not crash
        where = "head(backbone(x))" if split else "forward"
        return Run(tuple(sizes), None, None, "", f"running {where} raised {_one_line(error)}")
    finally:
        for handle in handles:
            handle.remove()

    heatmaps = output if isinstance(output, torch.Tensor) and output.dim() == 4 else None
    if heatmaps is None and final_outputs:
        heatmaps = final_outputs[0]
    coords, note = (None, "") if split else (_coordinates(output), "")
    if split:
        try:
            with torch.no_grad():
                coords = _coordinates(model(image))
        except Exception as error:  # noqa: BLE001 - e.g. `.cuda()` on a CPU-only machine
            note = f"forward raised {_one_line(error)}"
    if coords is None and not note:
        note = "forward returned no (N, joints, 3) tensor"
    return Run(tuple(sizes), heatmaps, coords, note, "")
