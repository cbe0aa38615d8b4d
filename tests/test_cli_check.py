"""`cnp check TARGET`: verdicts on implementations written in other styles than cnp's
(tests/implementations.py), the JSON fields, exit codes and bad targets.

Expected values come from the spec page (XS: Atto, 128-channel head, x2 x2 x1, depth_dim
32; S: Femto-L, 2UP) and the paper (XS 3.53M parameters), never from the checked model.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

import pytest

from cnp import cli
from cnp.checks import Check
from cnp.cli_check import _print
from cnp.conformance import Verdict
from cnp.errors import InputError
from cnp.target import load_factory
from implementations import IMPLEMENTATIONS, official_style
from scopes import module_unless_mutating

CHECK_NAMES = ["keys", "counts", "stages", "head", "upsampling", "output", "numerics"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A user's repository: one file per implementation, none of them cnp's."""
    directory = tmp_path_factory.mktemp("user_repo")
    for stem, source in IMPLEMENTATIONS.items():
        (directory / f"{stem}.py").write_text(source)
    return directory


def _main(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope=module_unless_mutating)
def check_json(repo):
    """check_json("official.py:build", "xs") -> (exit code, {variant: JSON object}), run once."""
    runs = {}

    def run(target, *variants):
        if (target, variants) not in runs:
            options = [arg for variant in variants for arg in ("--variant", variant)]
            code, out, _ = _main("check", repo / target, *options, "--json")
            runs[target, variants] = code, {row["variant"]: row for row in json.loads(out)}
        return runs[target, variants]

    return run


def by_name(row) -> dict:
    return {check["check"]: check for check in row["checks"]}


def verdicts(row) -> dict:
    return {check["check"]: check["ok"] for check in row["checks"]}


# ---------------------------------------------------------------- conforming, other styles


def test_official_style_xs_passes_every_check(check_json):
    code, rows = check_json("official.py:build", "xs", "m", "l")
    assert code == 0
    assert rows["xs"]["status"] == "pass"
    assert verdicts(rows["xs"]) == dict.fromkeys(CHECK_NAMES, True)


def test_json_fields_xs(check_json):
    _, rows = check_json("official.py:build", "xs", "m", "l")
    assert set(rows["xs"]) == {"variant", "status", "checks", "rename_map"}
    assert [c["check"] for c in rows["xs"]["checks"]] == CHECK_NAMES
    assert all({"check", "ok", "expected", "found", "detail"} <= set(c) for c in rows["xs"]["checks"])


def test_official_style_xs_figures_are_the_spec_and_paper_figures(check_json):
    _, rows = check_json("official.py:build", "xs", "m", "l")
    found = {name: check["found"] for name, check in by_name(rows["xs"]).items()}
    assert found["stages"] == {"depths": [2, 2, 6, 2], "dims": [40, 80, 160, 320]}  # Atto
    assert [layer["out"] for layer in found["head"]["layers"]] == [128, 128, 128]
    assert found["head"]["final_layer"]["out"] == 18 * 32  # joint_num x depth_dim
    assert found["counts"]["params_m"] == 3.53  # the paper
    assert found["output"] == [576, 32, 32]


def test_upsampling_by_interpolate_in_forward_is_measured_xs(check_json):
    _, rows = check_json("official.py:build", "xs", "m", "l")
    upsampling = by_name(rows["xs"])["upsampling"]
    assert upsampling["found"] == [2, 2, 1]  # XS is 2UP; the model has no upsampling module
    assert "8x8 -> 16x16 -> 32x32 -> 32x32" in upsampling["detail"]


def test_positional_head_children_are_official_keys_xs(check_json):
    _, rows = check_json("official.py:build", "xs", "m", "l")
    assert by_name(rows["xs"])["keys"]["ok"] is True
    assert rows["xs"]["rename_map"] is None
    # The released XS file names its head layers (dwconv, norm, pwconv): not by position.
    assert by_name(rows["xs"])["keys"]["found"]["released_checkpoint_loads"] is False


def test_cuda_only_forward_compares_heatmaps_not_coordinates_xs(check_json):
    _, rows = check_json("official.py:build", "xs", "m", "l")
    numerics = by_name(rows["xs"])["numerics"]
    assert numerics["ok"] is True
    assert set(numerics["found"]) == {"heatmaps"}
    assert "coordinates not compared: forward raised" in numerics["detail"]


def test_variants_the_factory_does_not_provide(check_json):
    code, rows = check_json("official.py:build")  # no --variant: all four, in order
    assert (code, list(rows)) == (0, ["xs", "s", "m", "l"])
    assert {v: (rows[v]["status"], rows[v]["checks"], rows[v]["rename_map"]) for v in ("m", "l")} == {
        "m": ("not provided", [], None), "l": ("not provided", [], None)}


def test_module_target_from_the_working_directory_xs(tmp_path, monkeypatch):
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "named_head.py").write_text(official_style(NAMED_HEAD_CHILDREN="True"))
    monkeypatch.chdir(tmp_path)
    code, out, _ = _main("check", "userpkg.named_head:build", "--variant", "xs", "--json")
    assert code == 0
    keys = by_name(json.loads(out)[0])["keys"]
    # Named head children are the released XS file's layout: it loads with strict=True.
    assert keys["found"]["released_checkpoint_loads"] is True


def test_text_output_names_every_check_xs(repo):
    code, out, _ = _main("check", repo / "official.py:build", "--variant", "xs")
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == f"{repo / 'official.py:build'} xs: pass"
    assert [line.split()[:2] for line in lines[1:]] == [[name, "pass"] for name in CHECK_NAMES]


# ---------------------------------------------------------------- wrong


def test_renamed_keys_fail_keys_only_xs(check_json):
    code, rows = check_json("fork.py:make", "xs")
    assert code == 1
    assert rows["xs"]["status"] == "fail"
    assert verdicts(rows["xs"]) == {**dict.fromkeys(CHECK_NAMES, True), "keys": False}


def test_renamed_keys_rename_map_xs(check_json):
    _, rows = check_json("fork.py:make", "xs")
    # The official names (spec: head.deconv_layers_{1,2,3}.{dwconv,norm,pwconv}.*) of the
    # fork's head.deconv_layers.{0,1,2}.*, tensor by tensor.
    tensors = {"dwconv": ["weight", "bias"], "pwconv": ["weight", "bias"],
               "norm": ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]}
    expected = {f"head.deconv_layers.{n - 1}.{part}.{t}": f"head.deconv_layers_{n}.{part}.{t}"
                for n in (1, 2, 3) for part in ("dwconv", "norm", "pwconv") for t in tensors[part]}
    assert rows["xs"]["rename_map"] == expected


def test_renamed_keys_numerics_pass_under_the_rename_map_xs(check_json):
    _, rows = check_json("fork.py:make", "xs")
    numerics = by_name(rows["xs"])["numerics"]
    assert numerics["ok"] is True
    assert set(numerics["found"]) == {"heatmaps", "coords"}  # its forward runs on CPU


def test_three_upsampling_layers_show_only_when_run(check_json):
    code, rows = check_json("s_upsamples_three_times.py:build", "s")
    checks = by_name(rows["s"])
    assert code == 1
    # Upsampling has no parameters: every check of the tensors passes.
    assert {n: checks[n]["ok"] for n in ("keys", "counts", "stages", "head")} == dict.fromkeys(
        ("keys", "counts", "stages", "head"), True)
    assert (checks["upsampling"]["expected"], checks["upsampling"]["found"]) == ([2, 2, 1], [2, 2, 2])
    assert (checks["output"]["expected"], checks["output"]["found"]) == ([576, 32, 32], [576, 64, 64])
    assert checks["numerics"]["ok"] is False


@pytest.mark.parametrize("stem", ["align_corners_false", "batchnorm_eps_1e_3"])
def test_numerical_differences_fail_numerics_only_xs(check_json, stem):
    code, rows = check_json(f"{stem}.py:build", "xs")
    assert code == 1
    assert verdicts(rows["xs"]) == {**dict.fromkeys(CHECK_NAMES, True), "numerics": False}
    assert by_name(rows["xs"])["numerics"]["found"]["heatmaps"] > 1.0


def test_text_output_shows_expected_and_found_of_a_failing_check_s(repo):
    """What a failing check was measured against, in the text report as in --json: the
    spec's upsampling factors and output shape, then what the model gave."""
    code, out, _ = _main("check", repo / "s_upsamples_three_times.py:build", "--variant", "s")
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in out.splitlines()[1:]}
    assert code == 1
    assert rows["upsampling"][0] == "fail" and rows["upsampling"][1].startswith(
        "expected [2,2,1]; found x2 x2 x2")
    assert rows["output"][0] == "fail" and rows["output"][1].startswith(
        "expected [576,32,32]; found 576x64x64")
    # keys and numerics say what differs in their own words: no expected/found prefix
    assert not rows["numerics"][1].startswith("expected")


def test_text_output_shows_the_start_of_the_rename_map_xs(repo, check_json):
    _, rows = check_json("fork.py:make", "xs")
    rename_map = rows["xs"]["rename_map"]
    code, out, _ = _main("check", repo / "fork.py:make", "--variant", "xs")
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  rename map"))
    assert code == 1
    # keys says what differs in its own words (counts of missing and unexpected keys)
    assert lines[1].split(None, 2)[:2] == ["keys", "fail"]
    assert lines[1].split(None, 2)[2].startswith("27 missing (")
    assert f"({len(rename_map)} keys, yours -> official" in lines[start]
    assert lines[start + 1:] == [f"    {key} -> {name}" for key, name in list(rename_map.items())[:3]]


def test_text_output_prints_an_expected_object_as_compact_json(capsys):
    stages = Check("stages", {"depths": [2, 2, 6, 2]}, {"depths": [2, 2, 6, 3]}, False,
                   detail="depths 2,2,6,3")
    _print("mine.py:build", [Verdict("xs", (stages,), None)])
    assert capsys.readouterr().out.splitlines()[1].split(None, 2)[2] == (
        'expected {"depths":[2,2,6,2]}; found depths 2,2,6,3')


# ---------------------------------------------------------------- bad targets

BROKEN = {
    "raises_on_import.py": "raise RuntimeError('the config file is missing')\n",
    "imports_missing.py": "import cnp_no_such_dependency\n",
    "factories.py": ("def raises(variant):\n    raise ValueError('unknown backbone')\n\n"
                     "def returns_int(variant):\n    return 42\n\n"
                     "def raises_bare(variant):\n    raise RuntimeError()\n\nCONSTANT = 3\n"),
    "notes.txt": "def build(variant):\n    return None\n",
}


@pytest.fixture(scope="module")
def broken_repo(repo):
    for name, source in BROKEN.items():
        (repo / name).write_text(source)
    return repo


@pytest.mark.parametrize("target, problem", [
    ("absent.py:build", "no such file"),
    ("cnp_no_such_module:build", "no module named 'cnp_no_such_module'"),
    ("factories.py:absent", "no name 'absent'"),
    ("raises_on_import.py:build", "raised RuntimeError: the config file is missing"),
    ("imports_missing.py:build", "raised ModuleNotFoundError"),
    ("factories.py:raises", "raises('xs') raised ValueError: unknown backbone"),
    ("factories.py:returns_int", "returns_int('xs') returned a int, not a torch.nn.Module"),
    ("factories.py:raises_bare", "raises_bare('xs') raised RuntimeError\n"),
    ("factories.py:CONSTANT", "CONSTANT is not callable (it is a int)"),
    ("official.py", "expected FILE.py:NAME or MODULE:NAME"),
    ("notes.txt:build", "not a Python file"),
], ids=["no-file", "no-module", "no-name", "import-raises", "import-error", "factory-raises",
        "factory-raises-no-message", "not-a-module", "not-callable", "no-name-given",
        "not-python"])
def test_bad_target_is_exit_2_with_one_line(broken_repo, target, problem):
    spelled = target if target.startswith("cnp_") else str(broken_repo / target)
    code, out, err = _main("check", spelled, "--variant", "xs")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith(f"cnp: error: {spelled}: ")
    assert problem in err


def test_no_provided_variant_is_exit_2(repo):
    target = repo / "official.py:build"
    code, out, err = _main("check", target, "--variant", "m", "--variant", "l")
    assert (code, out) == (2, "")
    assert err.startswith(f"cnp: error: {target}: ") and err.count("\n") == 1
    assert "provides none of the variants asked for (m, l)" in err


@pytest.mark.parametrize("target", [":build", "official.py:", "official.py:build()"],
                         ids=["no-location", "nothing-after-the-colon", "not-a-name"])
def test_target_not_of_the_form_is_exit_2_with_one_line(target):
    code, out, err = _main("check", target, "--variant", "xs")
    assert (code, out, err) == (2, "", f"cnp: error: {target}: expected FILE.py:NAME or MODULE:NAME\n")


def test_a_colon_in_the_folder_name_is_part_of_the_path(broken_repo, tmp_path):
    """TARGET splits at its last colon: a folder called `run:2` is a folder, and the
    factory named in a refusal is the NAME after that colon."""
    folder = tmp_path / "run:2"
    folder.mkdir()
    (folder / "factories.py").write_text((broken_repo / "factories.py").read_text())
    target = f"{folder / 'factories.py'}:raises"
    code, out, err = _main("check", target, "--variant", "xs")
    assert (code, out) == (2, "")
    assert err.startswith(f"cnp: error: {target}: raises('xs') raised ValueError: unknown backbone")


def test_a_file_target_imports_its_own_neighbours_first(tmp_path, monkeypatch):
    """As `python model.py` would: the file's folder comes first on sys.path, so its
    `config.py` wins over any other module called config."""
    for folder, value in (("elsewhere", "someone else's"), ("user", "the user's")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "config.py").write_text(f"cfg = {value!r}\n")
    (tmp_path / "user" / "model.py").write_text(
        "from config import cfg\n\ndef build(variant):\n    return cfg\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "elsewhere"), *sys.path])
    monkeypatch.delitem(sys.modules, "config", raising=False)
    try:
        factory = load_factory(f"{tmp_path / 'user' / 'model.py'}:build")
    finally:
        sys.modules.pop("config", None)
    assert factory("xs") == "the user's"


def test_a_file_that_fails_to_import_leaves_no_module_behind(broken_repo):
    with pytest.raises(InputError):
        load_factory(f"{broken_repo / 'raises_on_import.py'}:build")
    assert [name for name in sys.modules if "raises_on_import" in name] == []


def test_two_files_of_one_name_are_two_modules(tmp_path, monkeypatch):
    """Two targets called model.py in one process (a port and the official code side by
    side): each keeps its own module, where its classes are looked up (pickling,
    dataclasses), and neither replaces the other."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # each file's folder goes first on it
    factories = []
    for folder, answer in (("port", 1), ("official", 2)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model.py").write_text(f"def build(variant):\n    return {answer}\n")
        factories.append(load_factory(f"{tmp_path / folder / 'model.py'}:build"))
    port, official = factories
    assert (port("xs"), official("xs")) == (1, 2)
    assert port.__module__ != official.__module__
    assert (sys.modules[port.__module__].build, sys.modules[official.__module__].build) == (
        port, official)


# MODULE:NAME targets, imported from the working directory: a module that is not there is
# named as missing (nothing of the user's ran); one that is there and fails to import,
# whatever it raised, a missing dependency included, is reported as its import raising.
@pytest.mark.parametrize("target, problem", [
    ("cnp_no_such_package.model:build", "no module named 'cnp_no_such_package'"),
    ("cnp_user_pkg.absent:build", "no module named 'cnp_user_pkg.absent'"),
    ("cnp_user_pkg.raises_on_import:build",
     "importing cnp_user_pkg.raises_on_import raised RuntimeError: the config file is missing"),
    ("cnp_user_pkg.imports_missing:build", "importing cnp_user_pkg.imports_missing raised "
                                           "ModuleNotFoundError: No module named "
                                           "'cnp_no_such_dependency'"),
], ids=["no-package", "no-module-in-package", "import-raises", "import-error"])
def test_bad_module_target_is_exit_2_with_one_line(tmp_path, monkeypatch, target, problem):
    package = tmp_path / "cnp_user_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, source in BROKEN.items():
        (package / name).write_text(source)
    monkeypatch.chdir(tmp_path)
    try:
        code, out, err = _main("check", target, "--variant", "xs")
    finally:  # the next test's package of that name is another folder
        for name in [name for name in sys.modules if name.startswith("cnp_user_pkg")]:
            del sys.modules[name]
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith(f"cnp: error: {target}: ")
    assert problem in err
    # A module that is not there ran none of the user's code: nothing "raised".
    assert ("raised" in err) == ("importing" in problem)


@pytest.mark.slow
def test_bad_target_in_a_fresh_process_has_no_traceback(broken_repo, cli_process):
    result = cli_process("check", broken_repo / "raises_on_import.py:build")
    assert result.code == 2
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
