"""`cnp check-onnx`: does an ONNX export compute the ConvNeXtPose it claims to?

Four checks, each a `cnp.checks.Check`:
  structure   onnx.checker passes; one input N×3×H×W with a dynamic batch; the outputs it has
              (heatmaps, coordinates or both) with the variant's shapes
  variant     the architecture the convolution weights imply, against the expected variant
  upsampling  every Resize/Upsample node, in order, named by the head layer it sits in:
              one per upsampling head layer of the spec, each linear, align_corners, ×2
  numerics    ONNX Runtime against cnp's PyTorch model with the same weights on the golden
              input, batch 1 and 4, in tolerance units (cnp.testing: RTOL, ATOL)

The expected variant comes from `--variant`, else the `--weights` checkpoint, else the
file's metadata (written by `cnp export`), else the variant its file name names. Weights for
the numerics: `--weights`, else cnp's seeded weights when the metadata says the file was
exported by cnp from a variant; with neither, numerics are "not checked", never passed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy
import torch

from cnp import onnx_graph
from cnp.checkpoints import differences, variant_label
from cnp.identify import case_id
from cnp.checks import MEASURED, STORED, Check, plain
from cnp.errors import InputError
from cnp.export import (META_VARIANT, META_WEIGHTS, META_WEIGHTS_SHA256, require,
                        seeded, weights_sha256)
from cnp.model import ConvNeXtPose, soft_argmax
from cnp.specs import VARIANTS, VariantSpec, get_spec
from cnp.testing import ATOL, RTOL, one_thread, seeded_input

CHECKS = ("structure", "variant", "upsampling", "numerics")
BATCHES = (1, 4)
ALIGN = {"mode": "linear", "coordinate_transformation_mode": "align_corners", "scale": [2.0, 2.0]}


@dataclass(frozen=True)
class OnnxReport:
    path: str
    variant: str | None  # the variant the file was checked against
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return not any(c.ok is False for c in self.checks)

    def to_dict(self) -> dict:
        fields = ("check", "ok", "expected", "found", "detail")
        return plain({"path": self.path, "variant": self.variant,
                      "checks": [{k: c.to_dict()[k] for k in fields} for c in self.checks]})


@dataclass(frozen=True)
class Reference:
    """The PyTorch model to compare with, and where its weights came from."""

    model: ConvNeXtPose | None
    source: str  # one line: "--weights FILE", "seeded weights (seed 2023)", or why there are none
    from_weights: bool = False  # the model came from --weights


# ---------------------------------------------------------------- what to compare with


def _metadata(model) -> dict[str, str]:
    return {entry.key: entry.value for entry in model.metadata_props}


def _reference(meta: dict, weights: str | os.PathLike | None) -> Reference:
    if weights is not None:
        from cnp.checkpoints import load

        model = load(weights)  # CheckpointError (exit 2) for anything but a ConvNeXtPose
        recorded = meta.get(META_WEIGHTS_SHA256)
        same = "" if recorded is None else (
            "; the file records these weights" if recorded == weights_sha256(model)
            else "; the file records other weights (sha256 differs)")
        return Reference(model, f"--weights {weights}{same}", from_weights=True)
    source = meta.get(META_WEIGHTS, "")
    if (source.startswith("seeded:") and source.removeprefix("seeded:").isdigit()
            and meta.get(META_VARIANT) in VARIANTS):
        seed = int(source.removeprefix("seeded:"))
        model = seeded(meta[META_VARIANT], seed)
        recorded = meta.get(META_WEIGHTS_SHA256)
        if weights_sha256(model) != recorded:
            # Without the digest the seed alone cannot show the weights are the ones exported.
            why = "no sha256 of them" if recorded is None else "another sha256 than this cnp makes"
            return Reference(None, f"the file records cnp's seeded {meta[META_VARIANT].upper()} "
                                   f"weights (seed {seed}) with {why}: re-export it, or pass "
                                   "--weights")
        return Reference(model, f"cnp's seeded {meta[META_VARIANT].upper()} weights (seed {seed}), "
                                "as the file's metadata records")
    recorded = f" (the file records weights from {source.split(':', 1)[-1]})" if source else ""
    return Reference(None, f"no weights to compare with{recorded}: pass --weights CHECKPOINT")


def _expected_variant(path: Path, variant: str | None, reference: Reference,
                      meta: dict) -> tuple[VariantSpec | None, str]:
    if variant is not None:
        return get_spec(variant), "--variant"
    if reference.from_weights:
        return reference.model.spec, "the --weights checkpoint"
    if meta.get(META_VARIANT) in VARIANTS:
        return VARIANTS[meta[META_VARIANT]], "the file's metadata"
    label = variant_label(path)
    if label:
        return VARIANTS[label], "the file name"
    return None, "nothing (no --variant, --weights, metadata or variant in the file name)"


# ---------------------------------------------------------------- the checks


def _dims_text(shape) -> str:
    if shape is None:
        return "unknown"
    return "x".join("?" if d is None else str(d) for d in shape)


def _static(shape) -> bool:
    return all(isinstance(d, int) for d in shape)


def _checker(model) -> str:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
        return "pass"
    except Exception as error:  # noqa: BLE001 - any rejection is the finding
        return f"fail: {str(error).splitlines()[0] if str(error) else type(error).__name__}"


def _output_shapes(spec: VariantSpec) -> dict[str, list]:
    """Per output role, its shape after the batch."""
    return {"heatmaps": [spec.joint_num * spec.depth_dim, *spec.heatmap_size],
            "coords": [spec.joint_num, 3]}


def check_structure(model, spec: VariantSpec | None) -> Check:
    inputs = onnx_graph.graph_inputs(model)
    roles = onnx_graph.output_roles(model)
    declared = {o.name: onnx_graph.dims(o) for o in model.graph.output}
    image = onnx_graph.dims(inputs[0]) if len(inputs) == 1 else None
    batch = ("unknown" if not image else
             "dynamic" if not isinstance(image[0], int) else f"fixed at {image[0]}")
    found = {
        "checker": _checker(model),
        "inputs": {i.name: _dims_text(onnx_graph.dims(i)) for i in inputs},
        "batch": batch,
        "outputs": {name: _dims_text(shape) for name, shape in declared.items()},
        "has": " and ".join(r for r in ("heatmaps", "coords") if r in roles.values()) or "neither",
    }
    size = "x".join(map(str, spec.input_size)) if spec else "HxW"
    wanted = _output_shapes(spec) if spec else {}
    expected = {"checker": "pass", "inputs": f"one: Nx3x{size}", "batch": "dynamic",
                "outputs": "heatmaps and/or coords" + "".join(
                    f", {role} Nx{_dims_text(shape)}" for role, shape in wanted.items())}
    problems = [f"onnx.checker: {found['checker']}"] if found["checker"] != "pass" else []
    if image is None or len(image) != 4 or image[1] != 3:
        problems.append(f"expected one input Nx3xHxW, found {found['inputs']}")
    elif spec and _static(image[2:]) and image[2:] != list(spec.input_size):
        problems.append(f"input {_dims_text(image)}, expected {size} images")
    if batch != "dynamic":
        problems.append(f"batch {batch}: the file is one input size, not the model "
                        "(export with a dynamic batch)")
    if not roles:
        problems.append("no output is heatmaps (rank 4) or coordinates (rank 3, last dim 3)")
    for name, role in roles.items():
        shape = declared[name]
        if wanted and shape and _static(shape[1:]) and shape[1:] != wanted[role]:
            problems.append(f"{role} {_dims_text(shape)}, expected Nx{_dims_text(wanted[role])}")
    summary = "; ".join(f"{what} " + ", ".join(f"{k} {v}" for k, v in found[what].items())
                        for what in ("inputs", "outputs")) + f" ({batch} batch)"
    return Check("structure", expected, found, not problems, "spec", STORED,
                 "; ".join(problems) or summary)


def _architecture(source) -> dict:
    """The fields the variant check compares, from a VariantSpec or an Inferred."""
    if isinstance(source, VariantSpec):
        return {"depths": source.backbone.depths, "dims": source.backbone.dims,
                "kernel": source.backbone.kernel,
                "head_channels": tuple(h.out_channels for h in source.head),
                "head_kernels": tuple(h.kernel for h in source.head),
                "final_out": source.joint_num * source.depth_dim}
    return {"depths": source.depths, "dims": source.dims, "kernel": source.kernel,
            "head_channels": source.head_channels, "head_kernels": source.head_kernels,
            "final_out": source.final_out}


def check_variant(where: onnx_graph.Layout | None, reason: str, spec: VariantSpec | None,
                  expected_from: str) -> Check:
    expected = {"variant": spec.name, **_architecture(spec)} if spec else None
    if where is None:
        return Check("variant", expected, None, False, "spec", STORED,
                     f"the graph's convolutions are not a ConvNeXtPose: {reason}")
    inferred = where.inferred
    matches = [name for name, known in VARIANTS.items()
               if _architecture(known) == _architecture(inferred)]
    found = {"variant": matches[0] if matches else None, **_architecture(inferred)}
    if spec is None:
        return Check("variant", None, found, None, "spec", STORED,
                     f"no expected variant: {expected_from}; pass --variant")
    wrong = [d for d in differences(spec, inferred) if d.basis == STORED]
    detail = (f"expected from {expected_from}; " +
              ("; ".join(f"{d.check} expected {d.expected} found {d.found}" for d in wrong)
               if wrong else "every convolution shape matches"))
    return Check("variant", plain(expected), plain(found), not wrong, "spec", STORED, detail)


def check_upsampling(model, where: onnx_graph.Layout | None, spec: VariantSpec | None) -> Check:
    found = onnx_graph.upsampling(model, where)
    if spec is None:
        return Check("upsampling", None, found, None, "spec", MEASURED,
                     "no expected variant to compare with; pass --variant")
    expected = [{"layer": onnx_graph.head_layer_name(n), **ALIGN}
                for n, factor in enumerate(spec.head_upsample, start=1) if factor == 2]
    compared = [{key: item[key] for key in ("layer", *ALIGN)} for item in found]
    problems = []
    if len(found) != len(expected):
        problems.append(f"{len(found)} upsampling nodes, expected {len(expected)} (one per "
                        f"upsampling head layer of {spec.name.upper()})")
    for want, item in zip(expected, found):
        wrong = [f"{key} {item[key]}" for key in ("layer", *ALIGN) if item[key] != want[key]]
        if wrong:
            problems.append(f"{item['node']} in {item['layer']}: {', '.join(wrong)}; expected "
                            f"{want['layer']} linear align_corners x2")
    problems += [f"{item['node']} in {item['layer']}: unexpected" for item in found[len(expected):]]
    summary = "; ".join(f"{f['layer']} {f['mode']} {f['coordinate_transformation_mode']} "
                        f"x{_scale_text(f['scale'])}" for f in found) or "no upsampling nodes"
    return Check("upsampling", expected, found, compared == expected, "spec", MEASURED,
                 "; ".join(problems) or summary)


def _scale_text(scale) -> str:
    if not scale:
        return "?"
    return f"{scale[0]:g}" if scale[0] == scale[1] else ",".join(f"{s:g}" for s in scale)


def tolerance_units(found: numpy.ndarray, expected: numpy.ndarray) -> float:
    """max |found - expected| / (ATOL + RTOL·|expected|): cnp.testing.deviations' ratio,
    over every element; NaN anywhere gives NaN (a fail)."""
    ratio = numpy.abs(found.astype(numpy.float64) - expected) / (ATOL + RTOL * numpy.abs(expected))
    return float(ratio.max()) if ratio.size else 0.0


def check_numerics(model, reference: Reference) -> Check:
    batches = " and ".join(map(str, BATCHES))
    expected = f"<= 1 tolerance unit (rtol {RTOL}, atol {ATOL}), batch {batches}"
    if reference.model is None:
        return Check("numerics", expected, None, None, "golden", MEASURED, reference.source)
    from cnp.export import inference_session

    roles = onnx_graph.output_roles(model)
    try:
        session = inference_session(model.SerializeToString())
        input_name = session.get_inputs()[0].name
    except Exception as error:  # noqa: BLE001 - a graph ONNX Runtime refuses is the finding
        return Check("numerics", expected, None, False, "golden", MEASURED,
                     f"ONNX Runtime cannot load it: {str(error).splitlines()[0]}")
    found, problems = {}, []
    torch_model, spec = reference.model, reference.model.spec
    for batch in BATCHES:
        image = seeded_input(spec, batch)
        with torch.no_grad(), one_thread():
            heatmaps = torch_model.heatmaps(image).double()
            # Soft-argmax in float64, as the goldens: float32 sums over the volume are noise.
            want = {"heatmaps": heatmaps.numpy(),
                    "coords": soft_argmax(heatmaps, spec.joint_num, spec.depth_dim).numpy()}
        try:
            outputs = session.run(list(roles), {input_name: image.numpy()})
        except Exception as error:  # noqa: BLE001
            problems.append(f"batch {batch}: ONNX Runtime failed: {str(error).splitlines()[0]}")
            continue
        ratios = {}
        for (name, role), value in zip(roles.items(), outputs):
            if value.shape != want[role].shape:
                problems.append(f"batch {batch}: {role} {list(value.shape)}, "
                                f"expected {list(want[role].shape)}")
                ratios[role] = None
                continue
            ratio = tolerance_units(value, want[role])
            ratios[role] = None if math.isnan(ratio) else round(ratio, 4)  # JSON has no NaN
            if not ratio <= 1.0:
                problems.append(f"batch {batch}: {role} off by {ratio:.3g} tolerance units")
        found[f"batch_{batch}"] = ratios
    if not roles:
        problems.append("no heatmaps or coordinates output to compare")
    worst = max(((r, role, b) for b, ratios in found.items() for role, r in ratios.items()
                 if r is not None), default=None)
    measured = (f"worst {worst[0]:.3g} tolerance units ({worst[1]}, "
                f"{worst[2].replace('_', ' ')}) " if worst else "")
    detail = "; ".join([f"{measured}against {reference.source}", *problems])
    return Check("numerics", expected, found, not problems, "golden", MEASURED, detail)


# ---------------------------------------------------------------- entry points


def report(path: str | os.PathLike, variant: str | None = None,
           weights: str | os.PathLike | None = None) -> OnnxReport:
    """Every check on the ONNX file `path`. InputError (exit 2) for unusable input."""
    require("onnx", "onnxruntime")
    if variant is not None:
        get_spec(variant)  # an unknown name is a usage error before any file is read
    path = Path(path)
    model = onnx_graph.load(path)
    meta = _metadata(model)
    reference = _reference(meta, weights)
    spec, expected_from = _expected_variant(path, variant, reference, meta)
    try:
        where, reason = onnx_graph.layout(model, spec.joint_num if spec else None), ""
    except onnx_graph.NotConvNeXtPose as error:
        where, reason = None, str(error)
    checks = (check_structure(model, spec), check_variant(where, reason, spec, expected_from),
              check_upsampling(model, where, spec), check_numerics(model, reference))
    return OnnxReport(str(path), spec.name if spec else None, checks)


def check_onnx(path: str | os.PathLike, variant: str | None = None,
               weights: str | os.PathLike | None = None) -> list[Check]:
    """The checks of `report`, for the pytest plugin: every one must not fail."""
    return list(report(path, variant, weights).checks)


def onnx_cases(path: str | os.PathLike) -> list[tuple[str, Path]]:
    """(test id, file) for an .onnx file or every .onnx file in a directory."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or directory")
    files = sorted(p for p in path.iterdir() if p.suffix == ".onnx" and p.is_file()) \
        if path.is_dir() else [path]
    return [(case_id(p), p) for p in files]
