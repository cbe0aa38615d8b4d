"""The mutation score of cnp, module by module: how many small changes the tests catch.

    python tests/mutation.py                    # every module in SELECTION
    python tests/mutation.py specs analysis     # some of them
    python tests/mutation.py --max-children 4   # parallel mutants (default 2)

For each module, mutmut (3.8) changes the code in small ways (a `<` made `<=`, a string
emptied, an argument dropped), runs the tests that reach each changed function, and counts
the changes ("mutants") some test fails on. Not part of the default run or CI: it takes
minutes per module (docs/testing.md, "Mutation score", has the measured times).

Each module runs in a fresh copy of the repository under build/mutation/<module>/ (log:
mutmut.log there), with the tests in SELECTION[module]. The table it prints:
  killed     a test failed, or the mutant broke `import cnp` (pytest then exits 2 or 4,
             which mutmut files under "interrupted" and "timeout": counted as killed here),
             or crashed the test process (SIGABRT, SIGSEGV: onnxruntime aborts on a None
             where its C++ wants a string)
  timeout    the tests ran past mutmut's limit (an endless loop): caught, not killed
  survived   every test passed
  no tests   no selected test reaches the function
  excluded   listed in tests/mutation_equivalents.txt, each with its reason: equivalent (it
             cannot alter behaviour) or wording (a message's words change, every fact stays:
             tests assert facts, not words); and, by rule (USAGE_TEXT), a mutant that only
             changes or drops the text of a command-line option's help= or metavar=
  score      (killed + timeout) / (mutants - excluded)
Survivors are listed with their changed line; `mutmut show NAME` in the module's folder
prints the whole diff.

Two traps of mutmut on this code base, handled here:
- Code run at import (specs._head builds VARIANTS) is mutated only if cnp is imported
  after the mutant is switched on. By default mutmut forks every mutant from a process
  that imported cnp already. So: process_isolation "forkserver", whose server preloads
  torch and the test plugins (PRELOAD) but never cnp; each mutant's process imports cnp.
  mutmut links code run at import to the first test it runs only, so every selection
  starts with FIRST, whose first test compares the whole variants table with the spec page.
- A cached summary (analysis._summarize_spec) runs the code once per process, for the
  first test that asks, so mutmut would link its mutants to that test only. conftest.py
  clears cnp's caches before every test when mutmut runs (it sets MUTANT_UNDER_TEST).
  A module- or session-scoped fixture has the same effect: make it function-scoped where
  that is cheap with the caches warm (tests/test_cli.py), or give it the scope
  tests/scopes.py's module_unless_mutating ("function" when MUTANT_UNDER_TEST is set):
  the shared runs of test_cli_bench, test_checkpoints, test_cli_check and test_fast have it
  (fixtures that only write files, like test_checkpoint_forms' forms, need not).
mutmut never mutates decorated functions (properties, cached functions): the script lists
them as "not mutated".
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "mutation"
EQUIVALENTS = Path(__file__).with_name("mutation_equivalents.txt")

# Runs first in every selection: its first test, test_variants_are_the_spec_page, compares
# what cnp builds at import with the spec page. (A test id here would not do: pytest runs
# it where its module comes, when the module is selected too.)
FIRST = "tests/test_specs.py"

# The tests that reach each module. A module not listed here cannot be measured: add it.
SELECTION = {
    "specs": ["tests/test_architecture.py",
              "tests/test_closed_form.py", "tests/test_cli.py"],
    "analysis": ["tests/test_architecture.py", "tests/test_closed_form.py", "tests/test_cli.py",
                 "tests/test_compare.py", "tests/test_snapshots.py"],
    "checks": ["tests/test_checks.py", "tests/test_compare.py", "tests/test_cli.py"],
    "model": ["tests/test_architecture.py", "tests/test_closed_form.py",
              "tests/test_semantics.py", "tests/test_golden.py"],
    "testing": ["tests/test_golden.py", "tests/test_golden_compare.py", "tests/test_semantics.py"],
    "cli": ["tests/test_cli.py", "tests/test_checkpoints.py"],
    "cli_table": ["tests/test_cli.py"],
    "errors": ["tests/test_cli.py", "tests/test_checkpoints.py"],
    # Checkpoints: reading a file, telling the variant, the public API.
    "reading": ["tests/test_checkpoints.py", "tests/test_checkpoint_forms.py",
                "tests/test_checkpoint_convert.py", "tests/test_checkpoint_edges.py",
                "tests/test_unpacking_edges.py", "tests/test_inspect_text.py",
                "tests/test_checkpoint_contents.py"],
    # identify: without test_checkpoint_properties, whose hypothesis runs (~25 s) every
    # mutant of `infer` would pay for (about 2 mutants a minute); the example-based tests
    # reach the same lines.
    "identify": ["tests/test_checkpoints.py", "tests/test_checkpoint_forms.py",
                 "tests/test_checkpoint_edges.py", "tests/test_inspect_text.py",
                 "tests/test_checkpoint_contents.py"],
    "checkpoints": ["tests/test_checkpoints.py", "tests/test_checkpoint_forms.py",
                    "tests/test_checkpoint_convert.py", "tests/test_checkpoint_properties.py",
                    "tests/test_checkpoint_edges.py", "tests/test_inspect_text.py",
                    "tests/test_checkpoint_contents.py"],
    "unpacking": ["tests/test_checkpoints.py", "tests/test_checkpoint_forms.py",
                  "tests/test_checkpoint_convert.py", "tests/test_checkpoint_edges.py",
                  "tests/test_unpacking_edges.py", "tests/test_inspect_text.py",
                  "tests/test_checkpoint_contents.py"],
    # A user's implementation: `cnp check` and the plugin's --cnp-model.
    "conformance": ["tests/test_conformance.py", "tests/test_cli_check.py",
                    "tests/test_plugin_model.py"],
    "target": ["tests/test_cli_check.py", "tests/test_plugin_model.py"],
    "run_model": ["tests/test_run_model.py", "tests/test_cli_check.py",
                  "tests/test_plugin_model.py"],
    # ONNX and the fast path (the onnx extra must be installed). The graph readers and
    # check-onnx without tests/test_onnx.py: its tests read a real export, which every
    # mutant they reach would make anew (7 s: 2.3 hours for onnx_graph's mutants); the
    # hand-made graphs of the two modules below reach every line.
    "onnx_graph": ["tests/test_onnx_check_parts.py", "tests/test_onnx_graph.py"],
    "onnx_check": ["tests/test_onnx_check_parts.py", "tests/test_onnx_graph.py"],
    "export": ["tests/test_onnx.py", "tests/test_fast.py", "tests/test_export_parts.py"],
    "fast": ["tests/test_fast.py", "tests/test_onnx.py"],
    "fast_ort": ["tests/test_fast.py"],
    "bench": ["tests/test_cli_bench.py", "tests/test_benchmarks.py",
              "tests/test_bench_parts.py"],
    "plot": ["tests/test_plot.py"],
    # Commands.
    "cli_checkpoints": ["tests/test_checkpoints.py", "tests/test_checkpoint_forms.py",
                        "tests/test_checkpoint_convert.py", "tests/test_inspect_text.py",
                        "tests/test_checkpoint_edges.py", "tests/test_cli.py"],
    "cli_check": ["tests/test_cli_check.py", "tests/test_cli.py"],
    "cli_onnx": ["tests/test_onnx.py", "tests/test_cli.py"],
    "cli_bench": ["tests/test_cli_bench.py", "tests/test_cli.py"],
    "plugin": ["tests/test_plugin_checkpoints.py", "tests/test_plugin_model.py",
               "tests/test_plugin_onnx.py"],
}

# Imported once by mutmut's fork server, so that each mutant's process starts fast. Never
# cnp: each mutant's process must import cnp itself, with the mutant switched on.
PRELOAD = ["torch", "torch.utils.flop_counter", "numpy", "safetensors.torch", "hypothesis",
           "hypothesis.strategies", "syrupy", "syrupy.extensions.json", "pytest",
           "_pytest.pytester", "pytest_benchmark.plugin", "xdist.plugin"]

PYTEST_ARGS = ["-m", "not slow", "-p", "no:cacheprovider",  # slow: subprocesses, unlinked
               "-n", "0"]  # mutmut runs each mutant's tests in its own process

# mutmut's stored exit codes → what they mean here (see the module docstring).
KILLED = {1, 3, 2, 4, 255,  # tests failed; pytest internal error; import broken (2, 4, -1)
          -6, -11}  # the test process crashed: SIGABRT, SIGSEGV
TIMEOUT = {24, -24, 152, 36, -9}  # SIGXCPU, or SIGKILL one second after it
SURVIVED = {0}
NO_TESTS = {5, 33}
KEPT_DECORATORS = (["staticmethod"], ["classmethod"])  # mutmut mutates these functions


def mutmut_config(module: str) -> str:
    """The [tool.mutmut] section for one module (TOML)."""
    settings = {
        "source_paths": ["cnp"],
        "only_mutate": [f"cnp/{module}.py"],
        "also_copy": ["conftest.py", "fixtures", "docs"],
        "pytest_add_cli_args": PYTEST_ARGS,
        "pytest_add_cli_args_test_selection": [FIRST, *SELECTION[module]],
        "process_isolation": "forkserver",
        "forkserver_warmup": "import",
        "preload_modules_file": "preload.txt",
        "use_git_change_detection": False,
        # mutmut's limit is (time of the tests' bodies + constant) × multiplier, but here a
        # test's cost is mostly its fixtures and cnp's import, which mutmut does not time:
        # with its defaults, slow survivors on a busy machine were reported as timeouts.
        "timeout_constant": 60,
        "timeout_multiplier": 3,
    }
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    return "\n[tool.mutmut]\n" + "\n".join(lines) + "\n"


def prepare(module: str) -> Path:
    """A fresh copy of what the tests need, with mutmut's settings for `module`."""
    folder = WORK / module
    shutil.rmtree(folder, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache")
    for name in ("cnp", "tests", "fixtures", "docs"):
        shutil.copytree(ROOT / name, folder / name, ignore=ignore)
    shutil.copy2(ROOT / "conftest.py", folder / "conftest.py")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (folder / "pyproject.toml").write_text(pyproject + mutmut_config(module), encoding="utf-8")
    (folder / "preload.txt").write_text("\n".join(PRELOAD) + "\n", encoding="utf-8")
    return folder


def run_mutmut(folder: Path, max_children: int) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUTANT_UNDER_TEST")}
    env["OMP_NUM_THREADS"] = "1"  # mutants run side by side; results do not depend on it
    mutmut = Path(sys.executable).with_name("mutmut")
    with open(folder / "mutmut.log", "w", encoding="utf-8") as log:
        done = subprocess.run([str(mutmut), "run", "--max-children", str(max_children)],
                              cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = (folder / "mutmut.log").read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"mutmut failed in {folder} (exit {done.returncode}):\n{tail}")


def changed_lines(folder: Path, mutant: str, module: str) -> tuple[list[str], list[str]]:
    """The lines the mutant removes and adds, as mutmut shows them."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    with contextlib.chdir(folder):
        diff = get_diff_for_mutant(mutant, path=f"cnp/{module}.py").splitlines()
    removed = [line[1:].strip() for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:].strip() for line in diff if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def changed_line(folder: Path, mutant: str, module: str) -> str:
    """The first line the mutant changes, as mutmut shows it."""
    added = changed_lines(folder, mutant, module)[1]
    return added[0] if added else "(line removed)"


# A help text or a usage placeholder (metavar) of a command-line option: what `--help`
# shows. Tests check that every option has help (tests/test_cli.py), not its words; a
# mutant that only rewords, blanks (None) or drops one of these is excluded as wording.
USAGE_TEXT = re.compile(r'\b(help|metavar)=(f?"[^"]*"|None)\s*,?\s*')
USAGE_TEXT_REASON = "wording: an option's help text or usage placeholder (USAGE_TEXT)"


def only_usage_text(folder: Path, mutant: str, module: str) -> bool:
    removed, added = (" ".join(lines) for lines in changed_lines(folder, mutant, module))

    def without_usage_text(code: str) -> str:
        code = USAGE_TEXT.sub("", re.sub(r"\s+", " ", code))
        return re.sub(r",?\s*\)", ")", code).rstrip(", ")

    keeps_help = "help=None" not in added  # a missing help is what the tests catch
    return keeps_help and removed != added and without_usage_text(removed) == without_usage_text(added)


def read_equivalents() -> dict[str, tuple[str, str]]:
    """mutant name → (its changed line, why it cannot change behaviour)."""
    entries = {}
    for line in EQUIVALENTS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, *code, reason = (part.strip() for part in line.split(" | "))
            entries[name] = (" | ".join(code), reason)
    return entries


def not_mutated(module: str) -> list[str]:
    """Functions mutmut skips: decorated ones other than staticmethod and classmethod."""
    tree = ast.parse((ROOT / "cnp" / f"{module}.py").read_text(encoding="utf-8"))
    owners = [(None, tree)] + [(n.name, n) for n in tree.body if isinstance(n, ast.ClassDef)]
    return [f"{owner}.{item.name}" if owner else item.name
            for owner, node in owners for item in node.body
            if isinstance(item, ast.FunctionDef) and item.decorator_list
            and [getattr(d, "id", None) for d in item.decorator_list] not in KEPT_DECORATORS]


def score(module: str, folder: Path, equivalents: dict) -> dict:
    meta = json.loads((folder / "mutants" / "cnp" / f"{module}.py.meta").read_text())
    codes = meta["exit_code_by_key"]
    row = {"module": module, "mutants": len(codes), "killed": 0, "timeout": 0, "survived": 0,
           "no tests": 0, "other": 0, "excluded": 0, "usage text": 0, "survivors": [],
           "stale": []}
    for name, code in sorted(codes.items()):
        status = ("killed" if code in KILLED else "timeout" if code in TIMEOUT
                  else "survived" if code in SURVIVED else "no tests" if code in NO_TESTS
                  else "other")
        if name in equivalents:
            line, reason = equivalents[name]
            if status in ("survived", "no tests") and changed_line(folder, name, module) == line:
                row["excluded"] += 1
                continue
            row["stale"].append(f"{name}: listed in mutation_equivalents.txt but {status} or changed")
        elif status in ("survived", "no tests") and only_usage_text(folder, name, module):
            row["excluded"] += 1
            row["usage text"] += 1
            continue
        row[status] += 1
        if status in ("survived", "no tests", "other"):
            row["survivors"].append(f"{status:9} {name}: {changed_line(folder, name, module)}")
    counted = row["mutants"] - row["excluded"]
    row["score"] = (row["killed"] + row["timeout"]) / counted if counted else 1.0
    return row


COLUMNS = ["module", "mutants", "killed", "timeout", "survived", "no tests", "other",
           "excluded", "score", "wall"]


def print_row(row: dict) -> None:
    cells = [row["module"], *(str(row[c]) for c in COLUMNS[1:8]),
             f"{row['score']:.1%}", f"{row['wall'] / 60:.1f} min"]
    print(" | ".join(cells))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help=f"modules of cnp/ (default: {' '.join(SELECTION)})")
    parser.add_argument("--max-children", type=int, default=2, metavar="N",
                        help="mutants tested side by side (default 2)")
    parser.add_argument("--report-only", action="store_true",
                        help="score the last run again (after editing the equivalents file)")
    args = parser.parse_args(argv)
    modules = [Path(m).stem for m in args.modules] or list(SELECTION)
    unknown = [m for m in modules if m not in SELECTION]
    if unknown:
        parser.error(f"no test selection for {', '.join(unknown)}: add one to SELECTION")
    equivalents = read_equivalents()
    print(f"mutation score of cnp, {date.today()}, mutmut in {WORK}")
    rows = []
    for module in modules:
        start = time.monotonic()
        folder = WORK / module
        if not args.report_only:
            print(f"{module}: running (log: {folder / 'mutmut.log'})", flush=True)
            prepare(module)
            run_mutmut(folder, args.max_children)
        row = score(module, folder, equivalents)
        row["wall"] = time.monotonic() - start
        rows.append(row)
        for line in row["survivors"] + row["stale"]:
            print(f"  {line}")
        if row["usage text"]:
            print(f"  excluded as usage text (USAGE_TEXT): {row['usage text']}")
        skipped = not_mutated(module)
        if skipped:
            print(f"  not mutated (decorated): {', '.join(skipped)}")
        print_row(row)
    print("\n" + " | ".join(COLUMNS))
    for row in rows:
        print_row(row)
    listed = {n: e for n, e in equivalents.items() if n.split(".")[1] in modules}
    if listed:
        print("\nexcluded mutants:")
        for name, (line, reason) in sorted(listed.items()):
            print(f"  {name}: {line}  -- {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
