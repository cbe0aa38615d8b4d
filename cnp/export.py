"""ONNX export of a ConvNeXtPose and ONNX Runtime sessions (the `onnx` extra).

The graph: input `image` (N, 3, H, W) with a dynamic batch N, outputs `heatmaps`
(N, joint_num·depth_dim, h, w) and, unless `coords=False`, `coords` (N, joint_num, 3), the
soft-argmax of the heatmaps. torch's own exporter writes it, the way torch recommends today
(`torch.onnx.export(..., dynamo=True)`: torch.export, then onnxscript's translation).

onnx, onnxruntime and onnxscript are imported inside the functions that need them: nothing
else in cnp pays for them or fails without them (`require` turns their absence into one line).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import warnings
from contextlib import contextmanager
from importlib import metadata as package_metadata
from pathlib import Path

import torch
from torch import nn

from cnp.errors import InputError
from cnp.model import ConvNeXtPose, soft_argmax

INPUT, HEATMAPS, COORDS = "image", "heatmaps", "coords"
EXTRA = "onnx"  # pip install 'cnp[onnx]'
EXPORT_BATCH = 2  # the example batch: 1 would let torch.export specialize the batch to 1

# metadata_props keys cnp writes (and `cnp check-onnx` reads)
META_VERSION = "cnp.version"
META_VARIANT = "cnp.variant"
META_WEIGHTS = "cnp.weights"  # "seeded:<seed>" or "checkpoint:<file name>"
META_WEIGHTS_SHA256 = "cnp.weights_sha256"  # see weights_sha256


def require(*modules: str) -> None:
    """InputError (one line, exit 2) if a module of the `onnx` extra is not installed."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(", ".join(missing), f"not installed; ONNX support needs the {EXTRA!r} "
                                              f"extra: pip install 'cnp[{EXTRA}]'")


def cnp_version() -> str:
    try:
        return package_metadata.version("cnp")
    except package_metadata.PackageNotFoundError:
        return "unknown"


def weights_sha256(model: nn.Module) -> str:
    """sha256 of the weights themselves, whatever file they came from.

    Over `model.state_dict()` in its order (the official key order): for each entry its
    name, dtype and shape as one UTF-8 line ("name dtype 2,3,4\\n"), then its elements'
    bytes in row-major order (native little-endian). Equal weights in a .tar, a .pth or a
    .safetensors file give the same digest; a renamed, reshaped or changed tensor does not.
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        shape = ",".join(str(size) for size in tensor.shape)
        digest.update(f"{name} {str(tensor.dtype).removeprefix('torch.')} {shape}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def seeded(variant: str, seed: int) -> ConvNeXtPose:
    """cnp.testing.seeded_model, on one thread (see one_thread)."""
    from cnp.testing import one_thread, seeded_model

    with one_thread():
        return seeded_model(variant, seed)


def provenance(model: ConvNeXtPose, weights: str) -> dict[str, str]:
    """The metadata_props `cnp export` records: where the weights came from ("seeded:<seed>"
    or "checkpoint:<file name>"), their sha256, and the variant when the model is one."""
    from cnp.specs import VARIANTS

    metadata = {META_WEIGHTS: weights, META_WEIGHTS_SHA256: weights_sha256(model)}
    if VARIANTS.get(model.spec.name) == model.spec:  # a known variant, not an inferred one
        metadata[META_VARIANT] = model.spec.name
    return metadata


class Exported(nn.Module):
    """What the graph computes: heatmaps, and their soft-argmax unless `coords=False`."""

    def __init__(self, model: ConvNeXtPose, coords: bool = True):
        super().__init__()
        self.model, self.coords = model, coords

    def forward(self, image: torch.Tensor):
        heatmaps = self.model.heatmaps(image)
        if not self.coords:
            return heatmaps
        return heatmaps, soft_argmax(heatmaps, self.model.spec.joint_num, self.model.spec.depth_dim)


@contextmanager
def _quiet_exporter():
    # The exporter logs a warning per torchvision op it cannot register (torchvision is not
    # a dependency), torch.export a deprecation inside torch, and a failed opset conversion
    # a traceback (to_onnx reports that one in a line). None says anything about this graph;
    # a real failure raises.
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def to_onnx(model: ConvNeXtPose, *, opset: int | None = None, metadata: dict | None = None,
            coords: bool = True):
    """The export as an in-memory onnx.ModelProto, metadata_props set."""
    require("onnx", "onnxscript")
    spec = model.spec
    was_training = model.training
    wrapped = Exported(model.eval(), coords).eval()
    image = torch.zeros(EXPORT_BATCH, 3, *spec.input_size)
    outputs = [HEATMAPS, COORDS] if coords else [HEATMAPS]
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                wrapped, (image,), input_names=[INPUT], output_names=outputs,
                dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
                opset_version=opset, dynamo=True, verbose=False)
    finally:
        model.train(was_training)
    proto = program.model_proto
    written = max(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))
    if opset is not None and written != opset:
        raise InputError(f"--opset {opset}", f"torch's exporter could not write opset {opset} "
                                             f"(it converts down from {written}, not this far)")
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    return proto


def check_target(path: str | os.PathLike, force: bool = False) -> Path:
    """InputError unless `path` can be written: before an export's seconds, not after."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a directory; name the .onnx file to write")
    if path.exists() and not force:
        raise InputError(path, "exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise InputError(path, f"no such directory {str(path.parent)!r}")
    return path


def write_atomically(data: bytes, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write `data` to `path` via a temporary file in the same directory, then rename.

    The temporary file is created with mode 0o666 so the umask applies as for any new file.
    A failure leaves no temporary file and `path` as it was. An existing `path` is replaced
    only with `force` (InputError otherwise, before anything is written).
    """
    path = check_target(path, force)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except OSError as error:
        raise InputError(path, f"cannot write: {error.strerror}") from None
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def export_onnx(model: ConvNeXtPose, path: str | os.PathLike, *, opset: int | None = None,
                metadata: dict | None = None, coords: bool = True, force: bool = False) -> Path:
    """Export `model` to the ONNX file `path` (see the module docstring for the graph).

    `opset`: None for the exporter's default. `metadata`: extra metadata_props (cnp's
    version is always recorded). Written atomically, honouring the umask; an existing file
    is replaced only with `force`.
    """
    path = check_target(path, force)
    proto = to_onnx(model, opset=opset, coords=coords,
                    metadata={META_VERSION: cnp_version(), **(metadata or {})})
    return write_atomically(proto.SerializeToString(), path, force=force)


def session_options(threads: int | None = None):
    """ONNX Runtime at its best on a shared CPU: every graph optimization, intra-op threads
    equal to torch's, and no spin-waiting (spinning threads would take the cores from
    whatever runs next, e.g. the next backend of an interleaved benchmark)."""
    require("onnxruntime")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    return options


def inference_session(model: str | os.PathLike | bytes, threads: int | None = None):
    """An onnxruntime.InferenceSession on the CPU for a file path or serialized model bytes."""
    import onnxruntime

    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, session_options(threads),
                                        providers=["CPUExecutionProvider"])
