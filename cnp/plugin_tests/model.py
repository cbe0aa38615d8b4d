"""`pytest --cnp-model TARGET`: the `cnp check` checks as tests, one per variant and check
(`test_check[xs-keys]` ... `test_check[l-numerics]`; `-k xs` runs the XS checks only).

Collected by cnp's pytest plugin only when --cnp-model is given. Each variant is built
and checked once, by the first of its tests that runs; a variant TARGET does not provide
(NotImplementedError) skips, as does a check that could not be made (never a pass).
"""

from __future__ import annotations

import json

import pytest

from cnp.conformance import CHECKS, not_provided, verify
from cnp.errors import InputError
from cnp.plugin import FACTORY
from cnp.specs import VARIANTS
from cnp.target import build_variant

pytestmark = pytest.mark.cnp


class Verdicts(dict):
    """variant → Verdict (or the InputError its factory call raised), made on first use."""

    def __init__(self, factory, target: str):
        super().__init__()
        self.factory, self.target = factory, target

    def __missing__(self, variant: str):
        try:
            model = build_variant(self.factory, self.target, variant)
            self[variant] = not_provided(variant) if model is None else verify(model, variant)
        except InputError as error:
            self[variant] = error
        return self[variant]


@pytest.fixture(scope="session")
def cnp_verdicts(request) -> Verdicts:
    return Verdicts(request.config.stash[FACTORY], request.config.getoption("cnp_model"))


def _text(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def verify_check(verdicts: Verdicts, variant: str, name: str) -> None:
    verdict = verdicts[variant]
    if isinstance(verdict, InputError):
        pytest.fail(str(verdict), pytrace=False)
    if not verdict.provided:
        pytest.skip(f"{verdicts.target} does not provide {variant} (NotImplementedError)")
    check = verdict.check(name)
    if check.ok is None:
        pytest.skip(f"{name} not checked: {check.detail}")
    if not check.ok:
        if name == "keys":  # the detail names the keys; the lists can be long
            renames = [f"  {key} -> {official}" for key, official in (verdict.rename_map or {}).items()]
            shown = "\n".join(["rename map (yours -> official):", *renames] if renames else [])
        else:
            shown = f"expected {_text(check.expected)}\nfound    {_text(check.found)}"
        pytest.fail(f"{name} [{variant}]: {check.detail}\n{shown}".rstrip(), pytrace=False)


@pytest.mark.parametrize("variant, name", [pytest.param(v, c, id=f"{v}-{c}")
                                           for v in VARIANTS for c in CHECKS])
def test_check(cnp_verdicts, variant, name):
    verify_check(cnp_verdicts, variant, name)
