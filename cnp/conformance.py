"""Is a user's implementation ConvNeXtPose XS, S, M or L? The checks of `cnp check` and of
the pytest plugin's `--cnp-model`.

Seven checks per variant, each a `cnp.checks.Check` (expected from the spec, the paper or
cnp's golden weights; found read off the user's model):

  keys        state_dict names, order and shapes against the official layout
  counts      parameters, state_dict elements, BatchNorm buffers (spec build and paper)
  stages      stage depths and dims, read from the user's tensors
  head        each head layer's in/out channels and kernel; the final layer's outputs
  upsampling  each head layer's factor, measured by running the model (never from names)
  output      the heatmap shape
  numerics    cnp's seeded weights loaded into the model, the golden input, heatmaps (and
              coordinates, where `forward` runs on CPU) compared with cnp's own model

Names are compared after one known equivalence: head layers named by position
(`deconv_layers_N.0/.1/.2`, as in the released M and L files) are the official dwconv,
norm and pwconv. Where names differ otherwise but the tensors correspond one to one by
order and shape, the rename map says how, and the other checks read the tensors through it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch
from torch import nn

from cnp.analysis import millions
from cnp.checks import Check, equal, failed, plain
from cnp.checkpoints import POSITIONAL_HEAD
from cnp.model import build, soft_argmax
from cnp.run_model import Run, run_model
from cnp.specs import VariantSpec, get_spec, paper_figures
from cnp.target import build_variant, load_factory
from cnp.testing import ATOL, RTOL, one_thread, seeded_input, seeded_model

CHECKS = ("keys", "counts", "stages", "head", "upsampling", "output", "numerics")
NOT_PROVIDED = "not provided"
# The released M and L files name head layers by position; XS and S name them (docs/spec.md).
POSITIONAL_HEAD_VARIANTS = ("m", "l")
RELEASED_PREFIX = "module."  # saved from a DataParallel model

_BY_POSITION = re.compile(r"^(head\.deconv_layers_\d+)\.([012])\.")
_BY_NAME = re.compile(r"^(head\.deconv_layers_\d+)\.(dwconv|norm|pwconv)\.")
_POSITION_OF = {name: index for index, name in POSITIONAL_HEAD.items()}
_BLOCK = re.compile(r"^backbone\.stages\.(\d+)\.(\d+)\.")
_SHOWN = 3  # keys named in a one-line detail; --json lists them all


@dataclass(frozen=True)
class Verdict:
    """One variant of one implementation: its checks, or not provided."""

    variant: str
    checks: tuple[Check, ...]
    rename_map: dict[str, str] | None  # user key → official key, where only names differ
    provided: bool = True

    @property
    def status(self) -> str:
        if not self.provided:
            return NOT_PROVIDED
        return "fail" if failed(self.checks) else "pass"

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.check == name)

    def to_dict(self) -> dict:
        return {"variant": self.variant, "status": self.status,
                "checks": [c.to_dict() for c in self.checks], "rename_map": self.rename_map}


def not_provided(variant: str) -> Verdict:
    return Verdict(get_spec(variant).name, (), None, provided=False)


# ---------------------------------------------------------------- names


def official_name(key: str) -> str:
    """head.deconv_layers_1.0.weight → head.deconv_layers_1.dwconv.weight; others unchanged."""
    return _BY_POSITION.sub(lambda m: f"{m[1]}.{POSITIONAL_HEAD[m[2]]}.", key)


def released_name(key: str, variant: str) -> str:
    """The name an official key has in the released file of `variant`."""
    if variant in POSITIONAL_HEAD_VARIANTS:
        key = _BY_NAME.sub(lambda m: f"{m[1]}.{_POSITION_OF[m[2]]}.", key)
    return RELEASED_PREFIX + key


def _shapes(state) -> dict[str, list[int]]:
    return {key: list(tensor.shape) for key, tensor in state.items()}


def _joined(values, separator: str = ",") -> str:
    return separator.join(str(v) for v in values)


def _listed(keys) -> str:
    keys = list(keys)
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def _released_problem(variant: str, official: dict, user: dict) -> str | None:
    """Why the released file's state_dict would not load strict=True (into the model wrapped
    in DataParallel, as the official code loads it, or with `module.` stripped); None if it
    would. Decided from names and shapes alone."""
    released = {released_name(k, variant).removeprefix(RELEASED_PREFIX): s for k, s in official.items()}
    user = {k.removeprefix(RELEASED_PREFIX): s for k, s in user.items()}
    absent = [k for k in released if k not in user]
    extra = [k for k in user if k not in released]
    other = [k for k in released if k in user and user[k] != released[k]]
    if absent:
        return f"this model has no {absent[0]}"
    if extra:
        return f"the file has no {extra[0]}"
    return f"the file's {other[0]} has another shape" if other else None


def check_keys(spec: VariantSpec, official: dict, user: dict
               ) -> tuple[Check, dict[str, str] | None, dict[str, str]]:
    """The keys check, the rename map (or None) and user key → official-equivalent name."""
    names = {key: official_name(key) for key in user}
    present = set(names.values())
    missing = [k for k in official if k not in present]
    unexpected = [k for k, name in names.items() if name not in official]
    by_name = {name: key for key, name in names.items()}
    mismatched = {k: {"expected": official[k], "found": user[by_name[k]]}
                  for k in official if k in by_name and user[by_name[k]] != official[k]}
    in_order = [n for n in names.values() if n in official] == [k for k in official if k in present]
    rename = None
    if (missing or unexpected) and list(user.values()) == list(official.values()):
        # Same tensors in the same order, other names: official key i is user key i.
        names = dict(zip(user, official))
        rename = {key: name for key, name in names.items() if official_name(key) != name}
    release = _released_problem(spec.name, official, user)
    found = {"keys": len(user), "missing": missing, "unexpected": unexpected,
             "shape_mismatched": mismatched, "official_order": in_order,
             "released_checkpoint_loads": release is None}
    expected = {"keys": len(official), "missing": [], "unexpected": [], "shape_mismatched": {},
                "official_order": True}
    ok = not (missing or unexpected or mismatched) and in_order
    problems = [f"{len(missing)} missing ({_listed(missing)})" if missing else "",
                f"{len(unexpected)} unexpected ({_listed(unexpected)})" if unexpected else "",
                f"{len(mismatched)} of other shape ({_listed(mismatched)})" if mismatched else "",
                "" if in_order else "not in the official order"]
    positional = any(_BY_POSITION.match(key) for key in user)
    detail = "; ".join(p for p in problems if p) or (
        f"{len(user)} tensors: official names, order and shapes"
        + (" (head layers by position, as in the released M and L files)" if positional else ""))
    if rename:
        detail += f"; the tensors correspond one to one: a rename map of {len(rename)} keys makes them official"
    file = f"the released {spec.name.upper()} file"
    detail += f"; {file} loads strict=True" if release is None else f"; {file} would not load strict=True: {release}"
    return Check("keys", expected, plain(found), ok, detail=detail), rename, names


# ---------------------------------------------------------------- read from tensors


def _counts(model: nn.Module) -> dict[str, int]:
    batchnorm = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return {
        # Every parameter, frozen or not: the paper counts the architecture's.
        "params": sum(p.numel() for p in model.parameters()),
        "state_dict": sum(t.numel() for t in model.state_dict().values()),
        "batchnorm_buffers": sum(b.numel() for m in batchnorm for b in m.buffers(recurse=False)),
    }


def check_counts(spec: VariantSpec, official_model: nn.Module, model: nn.Module) -> Check:
    expected, found = _counts(official_model), _counts(model)
    paper, sources = paper_figures(spec), "spec"
    if paper is not None:
        expected["params_m"], found["params_m"] = paper.params_m, millions(found["params"])
        sources = "spec and paper"
        if paper.other_params_m is not None:
            expected["state_dict_m"] = paper.other_params_m
            found["state_dict_m"] = millions(found["state_dict"])
    paper_text = f" (paper {paper.params_m}M)" if paper is not None else ""
    return equal("counts", expected, found, source=sources,
                 detail=f"{found['params']:,} parameters{paper_text}, {found['state_dict']:,} "
                        f"state_dict elements, {found['batchnorm_buffers']:,} of them BatchNorm buffers")


def check_stages(spec: VariantSpec, view: dict[str, list[int]]) -> Check:
    expected = {"depths": list(spec.backbone.depths), "dims": list(spec.backbone.dims)}
    blocks: dict[int, set[int]] = {}
    for name in view:
        if match := _BLOCK.match(name):
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    if not blocks:
        return Check("stages", expected, None, None,
                     detail="not checked: no backbone.stages.* tensors to read (see keys)")
    count = max(4, max(blocks) + 1)
    dims = [view.get(f"backbone.stages.{i}.0.dwconv.weight", [None])[0] for i in range(count)]
    found = {"depths": [len(blocks.get(i, ())) for i in range(count)], "dims": dims}
    return equal("stages", expected, found,
                 detail=f"depths {_joined(found['depths'])}, dims {_joined(dims)} "
                        "(blocks per stage; channels of each stage's depthwise convolutions)")


def _kernel(weight_shape: list[int]) -> int | list[int]:
    """A square kernel as its side (as the spec gives it); any other as [height, width]."""
    height, width = weight_shape[-2:]
    return height if height == width else [height, width]


def check_head(spec: VariantSpec, view: dict[str, list[int]]) -> Check:
    layers, channels = [], spec.backbone.dims[-1]
    for layer in spec.head:
        layers.append({"in": channels, "out": layer.out_channels, "kernel": layer.kernel})
        channels = layer.out_channels
    expected = {"layers": layers,
                "final_layer": {"in": channels, "out": spec.joint_num * spec.depth_dim}}
    found_layers = []
    for n in range(1, len(spec.head) + 1):
        dw = view.get(f"head.deconv_layers_{n}.dwconv.weight")
        pw = view.get(f"head.deconv_layers_{n}.pwconv.weight")
        found_layers.append({"in": dw[0], "out": pw[0], "kernel": _kernel(dw)} if dw and pw else None)
    final = view.get("head.final_layer.weight")
    found = {"layers": found_layers,
             "final_layer": {"in": final[1], "out": final[0]} if final else None}
    if not final and not any(found_layers):
        return Check("head", expected, found, None,
                     detail="not checked: no head.* tensors to read (see keys)")
    widths = [layer["in"] for layer in found_layers if layer] + [final[1] if final else None]
    kernels = [layer["kernel"] for layer in found_layers if layer]
    return equal("head", expected, found,
                 detail=f"channels {_joined(widths, '->')}, kernels {_joined(kernels)}, final layer "
                        f"{final[0] if final else None} (expected joint_num {spec.joint_num} x "
                        f"depth_dim {spec.depth_dim})")


# ---------------------------------------------------------------- measured by running


def check_upsampling(spec: VariantSpec, run: Run) -> Check:
    expected = list(spec.head_upsample)
    sizes = run.sizes
    if run.error or any(size is None for size in sizes):
        why = run.error or "a head layer's tensors were not found or their module did not run"
        return Check("upsampling", expected, None, None, detail=f"not measured: {why}")
    factors = [_factor(a, b) for a, b in zip(sizes, sizes[1:])]
    path = " -> ".join(f"{h}x{w}" for h, w in sizes)
    return equal("upsampling", expected, factors,
                 detail=f"x{_joined(factors, ' x')}, measured: sizes into head layers 1-3 and "
                        f"the final layer {path}")


def _factor(before, after):
    ratios = {a / b for a, b in zip(after, before)}
    ratio = ratios.pop() if len(ratios) == 1 else None
    return int(ratio) if ratio is not None and ratio.is_integer() else [a / b for a, b in zip(after, before)]


def check_output(spec: VariantSpec, run: Run) -> Check:
    expected = [spec.joint_num * spec.depth_dim, *spec.heatmap_size]
    if run.heatmaps is None:
        return Check("output", expected, None, False,
                     detail=run.error or "no heatmaps: neither head(backbone(x)) nor the final layer gave any")
    found = list(run.heatmaps.shape[1:])
    return equal("output", expected, found,
                 detail=f"{_joined(found, 'x')} heatmaps for a 1x3x{spec.input_size[0]}x"
                        f"{spec.input_size[1]} image")


def _deviation(found: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest |found - expected| in units of the golden tolerance (<= 1 passes)."""
    expected = expected.to(torch.float64)
    ratio = (found.detach().to("cpu", torch.float64) - expected).abs() / (ATOL + RTOL * expected.abs())
    return float(ratio.max())


def check_numerics(run: Run, reference: Reference, loaded: str | None) -> Check:
    expected = {"heatmaps": 1.0}
    tolerance = f"in units of the golden tolerance (rtol {RTOL}, atol {ATOL}; at most 1 passes)"
    if loaded:
        return Check("numerics", expected, None, None, source="golden",
                     detail=f"not checked: cnp's weights do not load into the model ({loaded})")
    if run.heatmaps is None or run.heatmaps.shape != reference.heatmaps.shape:
        shape = "none" if run.heatmaps is None else "x".join(map(str, run.heatmaps.shape))
        theirs = "x".join(map(str, reference.heatmaps.shape))
        return Check("numerics", expected, None, False, source="golden",
                     detail=f"heatmaps {shape} cannot be compared with cnp's {theirs}")
    found = {"heatmaps": round(_deviation(run.heatmaps, reference.heatmaps), 4)}
    if run.coords is not None and run.coords.shape == reference.coords.shape:
        expected["coords"] = 1.0
        found["coords"] = round(_deviation(run.coords, reference.coords), 4)
        coords = f"coordinates {found['coords']}"
    else:
        coords = f"coordinates not compared: {run.coords_note}"
    ok = all(value <= 1.0 for value in found.values())
    return Check("numerics", expected, found, ok, source="golden",
                 detail=f"heatmaps {found['heatmaps']} {tolerance}; {coords}")


# ---------------------------------------------------------------- one variant


@dataclass(frozen=True)
class Reference:
    """cnp's own model with the golden weights, on the golden input."""

    state: dict[str, torch.Tensor]
    image: torch.Tensor
    heatmaps: torch.Tensor
    coords: torch.Tensor


@functools.lru_cache(maxsize=4)
def reference(spec: VariantSpec) -> Reference:
    model = seeded_model(spec)
    image = seeded_input(spec)
    with torch.no_grad():
        heatmaps = model.heatmaps(image)
    # float64 soft-argmax, as the goldens: float32 sums over a volume are noise at 1e-3 voxel.
    coords = soft_argmax(heatmaps.to(torch.float64), spec.joint_num, spec.depth_dim)
    return Reference(model.state_dict(), image, heatmaps, coords)


def _load(model: nn.Module, state: dict, names: dict[str, str]) -> str | None:
    """Load cnp's weights through `names` (user key → official name); the problem, or None."""
    try:
        model.load_state_dict({key: state[name] for key, name in names.items()}, strict=True)
    except (KeyError, RuntimeError) as error:
        return " ".join(str(error).split())[:300] if not isinstance(error, KeyError) \
            else f"no official tensor {error.args[0]!r}"
    return None


def verify(model: nn.Module, variant: str) -> Verdict:
    """Every check of `model` against `variant`. The model's weights are overwritten."""
    spec = get_spec(variant)
    with one_thread():
        official_model = build(spec, device="meta")
        official = _shapes(official_model.state_dict())
        user = _shapes(model.state_dict())
        keys, rename, names = check_keys(spec, official, user)
        view = {names[key]: shape for key, shape in user.items()}
        model.eval()
        ref = reference(spec)
        on_meta = any(t.is_meta for t in model.state_dict().values())
        loaded = "it is on the meta device: no values" if on_meta else _load(model, ref.state, names)
        owners = [f"head.deconv_layers_{n}.dwconv.weight" for n in range(1, len(spec.head) + 1)]
        by_name = {name: key for key, name in names.items()}
        run = run_model(model, ref.image, [by_name.get(o) for o in owners],
                        by_name.get("head.final_layer.weight"))
        checks = (keys, check_counts(spec, official_model, model), check_stages(spec, view),
                  check_head(spec, view), check_upsampling(spec, run), check_output(spec, run),
                  check_numerics(run, ref, loaded))
    return Verdict(spec.name, checks, rename)


def verify_target(target: str, variants) -> list[Verdict]:
    """Import TARGET (running the user's code) and verify each variant it provides."""
    factory = load_factory(target)
    verdicts = []
    for variant in variants:
        name = get_spec(variant).name
        with one_thread():  # the user's initialization too
            model = build_variant(factory, target, name)
        verdicts.append(not_provided(name) if model is None else verify(model, name))
    return verdicts
