"""chexdino and the workflow use Snakemake and its SLURM plugin through their public surfaces
only: no attribute with a leading underscore (``workflow._localrules``,
``resource_settings._parsed_overwrite_resources``, ``scheduler._executor``), neither written
``obj._name`` nor spelled as a string for ``getattr``/``setattr``/``hasattr``. Such names
change without notice between releases. A Python file is held to this in full where it
imports Snakemake or a plugin; elsewhere (torch's ``torch._dynamo``, chexdino's ``self._x``)
only names that stand for Snakemake's objects (``workflow``, ``rule``, ``scheduler``, ...)
are.
"""

from __future__ import annotations

import ast
import re

from conftest import REPO

OWN = {"self", "cls"}
SNAKEMAKE_NAMES = {"workflow", "rule", "rules", "scheduler", "executor", "dag", "job",
                   "resource_settings", "executor_settings", "snakemake"}
ATTRIBUTE_FUNCTIONS = {"getattr", "setattr", "hasattr", "delattr"}
# In .smk files (Snakemake's Python dialect, not parseable by ast): `x._y` or getattr(x, "_y").
SMK_PRIVATE = re.compile(r"\b\w+\s*\.\s*_(?!_)\w|(?:get|set|has|del)attr\([^,()]+,\s*[\"']_(?!_)")


def private_accesses(source: str) -> list[str]:
    """``line: expression`` for each leading-underscore attribute of a Snakemake object."""
    tree = ast.parse(source)
    imported = {alias.asname or alias.name.split(".")[0]
                for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in node.names
                if (node.module if isinstance(node, ast.ImportFrom) else alias.name
                    ).startswith("snakemake")}
    uses_snakemake = bool(imported)

    def snakemake_object(expr: ast.expr) -> bool:
        while isinstance(expr, ast.Attribute | ast.Call | ast.Subscript):
            expr = expr.func if isinstance(expr, ast.Call) else expr.value
        name = expr.id if isinstance(expr, ast.Name) else ""
        return name in SNAKEMAKE_NAMES | imported or (uses_snakemake and name not in OWN)

    def private(name: object) -> bool:
        return isinstance(name, str) and name.startswith("_") and not name.startswith("__")

    def hit(node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute):  # obj._name
            return private(node.attr) and snakemake_object(node.value)
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ATTRIBUTE_FUNCTIONS and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant) and private(node.args[1].value)
                and snakemake_object(node.args[0]))  # getattr(obj, "_name")

    return [f"{node.lineno}: {ast.unparse(node)}" for node in ast.walk(tree) if hit(node)]


def smk_private_accesses(text: str) -> list[str]:
    return [f"{i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1)
            if SMK_PRIVATE.search(line.split("#", 1)[0])]


def test_the_checks_catch_what_they_are_for():
    """The scans flag the forms this rule exists to keep out (as the workflow once used them)
    and pass the public forms used instead."""
    old = ('rule.name in getattr(workflow, "_localrules", ())\n'
           "default = workflow.resource_settings._parsed_default_resources.get('x')\n")
    assert len(private_accesses(old)) == 2
    # In a module that imports Snakemake, whatever the variable is called.
    assert private_accesses("from snakemake.resources import Resource\n"
                            "settings._parsed_overwrite_threads[name] = Resource('_cores', 2)\n")
    assert smk_private_accesses('executor = getattr(workflow.scheduler, "_executor", None)\n')
    assert smk_private_accesses("    workflow.scheduler._executor.slurm_logdir = x\n")
    public = ("workflow.resource_settings.default_resources.get('slurm_partition')\n"
              "self._cache = {}\ntorch._dynamo.reset()\nx.__class__\n"
              "getattr(dist.distributed_c10d, '_abort_process_group', None)\n")
    assert private_accesses(public) == []
    assert smk_private_accesses("    settings = workflow.executor_settings  # ._x in a comment\n"
                                ) == []


def test_chexdino_uses_no_private_snakemake_or_plugin_attribute():
    sources = sorted((REPO / "src" / "chexdino").rglob("*.py"))
    assert len(sources) > 10
    found = {str(p.relative_to(REPO)): hits for p in sources
             if (hits := private_accesses(p.read_text()))}
    assert found == {}


def test_the_workflow_uses_no_private_snakemake_or_plugin_attribute():
    files = [REPO / "Snakefile", *sorted((REPO / "workflow").rglob("*.smk"))]
    assert len(files) > 5
    found = {str(p.relative_to(REPO)): hits for p in files
             if (hits := smk_private_accesses(p.read_text()))}
    assert found == {}
