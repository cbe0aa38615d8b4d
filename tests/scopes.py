"""Scopes for fixtures that run cnp's code once and share the result between tests.

Under mutation testing (tests/mutation.py) mutmut links a mutant to the tests that ran its
code while it recorded coverage. A module-scoped fixture runs that code once, inside the
first test that asks for it, so every later test of the module would never be run against
the mutant. mutmut sets MUTANT_UNDER_TEST; then such fixtures run once per test.
"""

from __future__ import annotations

import os


def module_unless_mutating(fixture_name: str, config) -> str:
    """A pytest fixture scope: "module", or "function" while mutmut runs the tests."""
    return "function" if "MUTANT_UNDER_TEST" in os.environ else "module"
