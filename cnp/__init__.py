"""cnp: executable answers about the ConvNeXtPose architecture (variants XS, S, M, L)."""

from cnp.analysis import Summary, summarize
from cnp.model import ConvNeXtPose, build, soft_argmax
from cnp.specs import VARIANTS, UnknownVariantError, VariantSpec, get_spec

__all__ = [
    "VARIANTS", "ConvNeXtPose", "Summary", "UnknownVariantError", "VariantSpec",
    "build", "get_spec", "soft_argmax", "summarize",
]
