"""A user's implementation, named as `path/to/file.py:NAME` or `package.module:NAME`.

`NAME(variant)` takes "xs", "s", "m" or "l" and returns an `nn.Module`; raising
NotImplementedError says the implementation does not provide that variant. Importing the
target runs the user's code, as `python file.py` would: that is what the user asked for.

Every way a target can be unusable (no file, no module, no such name, an import that
raises, a factory that raises, something that is not a Module) is an InputError: one line
naming the target and the problem, exit 2, no traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable

from torch import nn

from cnp.errors import InputError

FORM = "expected FILE.py:NAME or MODULE:NAME"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _prepend(directory: str) -> None:
    # The user's file imports its neighbours (`from config import cfg`), as it would when run.
    if directory not in sys.path:
        sys.path.insert(0, directory)


def _import_file(target: str, path: Path):
    if not path.is_file():
        raise InputError(target, f"no such file: {path}")
    # One module name per file: two files called model.py never share a sys.modules entry.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"cnp_target_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputError(target, f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    _prepend(str(path.resolve().parent))
    sys.modules[name] = module  # dataclasses and pickling look their module up there
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:  # the user's code: anything can happen
        sys.modules.pop(name, None)
        raise InputError(target, f"importing {path} raised {_one_line(error)}") from None
    return module


def _import_module(target: str, name: str):
    _prepend(os.getcwd())  # `cnp check pkg.model:build` from the user's repository
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and (name == error.name or name.startswith(error.name + ".")):
            raise InputError(target, f"no module named {error.name!r}") from None
        raise InputError(target, f"importing {name} raised {_one_line(error)}") from None
    except (Exception, SystemExit) as error:
        raise InputError(target, f"importing {name} raised {_one_line(error)}") from None


def load_factory(target: str) -> Callable[[str], nn.Module]:
    """The callable TARGET names, imported; InputError if there is none."""
    location, colon, attribute = target.rpartition(":")
    if not colon or not location or not attribute.isidentifier():
        raise InputError(target, FORM)
    is_file = location.endswith(".py") or "/" in location or os.sep in location
    module = _import_file(target, Path(location)) if is_file else _import_module(target, location)
    if not hasattr(module, attribute):
        raise InputError(target, f"no name {attribute!r} in {location}")
    factory = getattr(module, attribute)
    if not callable(factory):
        raise InputError(target, f"{attribute} is not callable (it is a {type(factory).__name__})")
    return factory


def build_variant(factory: Callable, target: str, variant: str) -> nn.Module | None:
    """`factory(variant)`; None when it raises NotImplementedError (variant not provided)."""
    call = f"{target.rpartition(':')[2]}({variant!r})"
    try:
        model = factory(variant)
    except NotImplementedError:
        return None
    except (Exception, SystemExit) as error:
        raise InputError(target, f"{call} raised {_one_line(error)}") from None
    if not isinstance(model, nn.Module):
        raise InputError(target, f"{call} returned a {type(model).__name__}, not a torch.nn.Module")
    return model
