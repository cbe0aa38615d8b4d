"""cnp: executable answers about the ConvNeXtPose architecture (variants XS, S, M, L)."""

from cnp.analysis import Summary, summarize
from cnp.checkpoints import CheckpointError, Report, inspect, load
from cnp.model import ConvNeXtPose, build, soft_argmax
from cnp.specs import VARIANTS, UnknownVariantError, VariantSpec, get_spec

__all__ = [
    "VARIANTS", "CheckpointError", "ConvNeXtPose", "Report", "Summary", "UnknownVariantError",
    "VariantSpec", "build", "get_spec", "inspect", "load", "soft_argmax", "summarize",
]
