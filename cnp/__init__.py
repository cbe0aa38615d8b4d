"""cnp: executable answers about the ConvNeXtPose architecture (variants XS, S, M, L).

The names below are imported on first use (PEP 562): cnp's pytest plugin is loaded by
every pytest run where cnp is installed, and importing `cnp.plugin` must not import torch.
"""

import importlib

_HOMES = {
    "Summary": "cnp.analysis", "summarize": "cnp.analysis",
    "CheckpointError": "cnp.checkpoints", "Report": "cnp.checkpoints",
    "inspect": "cnp.checkpoints", "load": "cnp.checkpoints",
    "ConvNeXtPose": "cnp.model", "build": "cnp.model", "soft_argmax": "cnp.model",
    "VARIANTS": "cnp.specs", "UnknownVariantError": "cnp.specs", "VariantSpec": "cnp.specs",
    "get_spec": "cnp.specs",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'cnp' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOMES))
