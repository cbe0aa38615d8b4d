"""`cnp check TARGET`: verdicts on implementations written in other styles than cnp's
(tests/implementations.py), the JSON fields, exit codes and bad targets.

Expected values come from the spec page (XS: Atto, 128-channel head, x2 x2 x1, depth_dim
32; S: Femto-L, 2UP) and the paper (XS 3.53M parameters), never from the checked model.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from cnp import cli
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
    code, rows = check_json("official.py:build", "xs", "m", "l")
    assert code == 0
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


# ---------------------------------------------------------------- bad targets

BROKEN = {
    "raises_on_import.py": "raise RuntimeError('the config file is missing')\n",
    "imports_missing.py": "import cnp_no_such_dependency\n",
    "factories.py": ("def raises(variant):\n    raise ValueError('unknown backbone')\n\n"
                     "def returns_int(variant):\n    return 42\n\nCONSTANT = 3\n"),
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
    ("factories.py:CONSTANT", "CONSTANT is not callable"),
    ("official.py", "expected FILE.py:NAME or MODULE:NAME"),
], ids=["no-file", "no-module", "no-name", "import-raises", "import-error", "factory-raises",
        "not-a-module", "not-callable", "no-name-given"])
def test_bad_target_is_exit_2_with_one_line(broken_repo, target, problem):
    spelled = target if target.startswith("cnp_") else str(broken_repo / target)
    code, out, err = _main("check", spelled, "--variant", "xs")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith(f"cnp: error: {spelled}: ")
    assert problem in err


def test_no_provided_variant_is_exit_2(repo):
    code, out, err = _main("check", repo / "official.py:build", "--variant", "m", "--variant", "l")
    assert (code, out) == (2, "")
    assert "provides none of the variants asked for (m, l)" in err


@pytest.mark.slow
def test_bad_target_in_a_fresh_process_has_no_traceback(broken_repo, cli_process):
    result = cli_process("check", broken_repo / "raises_on_import.py:build")
    assert result.code == 2
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
