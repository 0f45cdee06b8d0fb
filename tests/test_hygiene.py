"""Workflow hygiene enforced by the suite: snakefmt formatting and a clean `snakemake --lint`."""

from __future__ import annotations

import subprocess

from conftest import BINDIR, REPO, snakemake, write_run_overlay


def test_snakefmt_check():
    result = subprocess.run([str(BINDIR / "snakefmt"), "--check", "Snakefile", "workflow"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakemake_lint_is_clean(small_demo, tmp_path):
    overlay = write_run_overlay(small_demo, tmp_path / "results", tiny_training=False)
    result = snakemake("--lint", "--configfile", "tests/demo/config.yaml", str(overlay),
                       cores=None, check=False)
    assert result.returncode == 0, result.stdout
    assert "Lints for" not in result.stdout, result.stdout


def config_keys() -> set[str]:
    """Every key name of config.yaml (leaves and sections' own keys)."""
    import yaml

    names: set[str] = set()

    def walk(section):
        for key, value in section.items():
            names.add(key)
            if isinstance(value, dict) and key not in ("overrides", "prompt_overrides",
                                                       "shards", "compare_models"):
                walk(value)

    walk(yaml.safe_load((REPO / "config.yaml").read_text()))
    return names


# A parameter of one of these names is the config key under another name.
ALIASES = {"n_bootstrap": "bootstrap", "store_size": "size"}
# Not config restatements: an empty override, and the one CLIP tokenizer's name.
ALLOWED = {("predict_settings", "labels"), ("get_tokenizer", "name")}


def restated_defaults(source: str) -> list[str]:
    """``function(param=default)`` where ``param`` names a config key and the default is a
    value (``None`` means "not given" and may stay)."""
    import ast

    found, keys = [], config_keys()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        args = node.args.posonlyargs + node.args.args
        positional = zip(args[len(args) - len(node.args.defaults):], node.args.defaults,
                         strict=True)
        keyword = zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True)
        pairs = [*positional, *((a, d) for a, d in keyword if d)]
        for arg, default in pairs:
            is_none = isinstance(default, ast.Constant) and default.value is None
            if (ALIASES.get(arg.arg, arg.arg) in keys and not is_none
                    and (node.name, arg.arg) not in ALLOWED):
                found.append(f"{node.name}({arg.arg}={ast.unparse(default)})")
    return found


def test_no_function_restates_a_config_default():
    """config.yaml is the one place defaults live: a stage's function takes the value from the
    typed section its command builds, never from a default of its own."""
    assert restated_defaults("def f(x, size=320, seed=None): pass") == ["f(size=320)"]
    package = REPO / "src" / "chexdino"
    found = {str(path.relative_to(package)): hits for path in sorted(package.rglob("*.py"))
             if "demo" not in path.parts and path.name != "film_preprocess.py"
             and (hits := restated_defaults(path.read_text()))}
    assert found == {}, found
