"""What editing a module reruns: docs/reruns.md's table against the rules' code versions, and
Snakemake's own plan after harmless and real edits of a finished run (tests/test_workflow.py's).

Each rule passes ``code=stage_code("<module>")`` (chexdino.code_version): the version of its
module and of every chexdino module that imports. The table in the docs lists, for every
module, the rules whose code it is; everything downstream of them reruns too.
"""

from __future__ import annotations

import re
from pathlib import Path

from chexdino.code_version import PACKAGE_DIR, behaviour, module_closure

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reruns.md"
TABLE_START, TABLE_END = "<!-- module table: start -->", "<!-- module table: end -->"


def rule_modules() -> dict[str, str]:
    """Rule name -> the module its ``stage_code`` names, from workflow/rules/*.smk."""
    found = {}
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"(?m)^(?=(?:local)?rule \w+:)", path.read_text()):
            rule = re.match(r"(?:local)?rule (\w+):", block)
            code = re.search(r'code=stage_code\("([\w.]+)"\)', block)
            if rule and code:
                found[rule.group(1)] = code.group(1)
    return found


def module_table() -> str:
    """The Markdown table docs/reruns.md holds: each module and the rules it reruns."""
    rules = rule_modules()
    closures = {rule: {p.relative_to(PACKAGE_DIR).as_posix() for p in module_closure(module)}
                for rule, module in rules.items()}
    modules = sorted(p.relative_to(PACKAGE_DIR).as_posix() for p in PACKAGE_DIR.rglob("*.py")
                     if "__pycache__" not in p.parts)
    lines = ["| module | rules it reruns (and everything downstream of them) |", "|---|---|"]
    for module in modules:
        users = sorted(rule for rule, files in closures.items() if module in files)
        lines.append(f"| `{module}` | {', '.join(f'`{r}`' for r in users) or 'none'} |")
    return "\n".join(lines)


def test_the_docs_table_is_what_the_rules_run():
    text = DOC.read_text()
    shown = text.split(TABLE_START)[1].split(TABLE_END)[0].strip()
    assert shown == module_table(), (
        f"docs/reruns.md is stale; the table between the markers should read:\n{module_table()}")


def test_no_stage_runs_the_model_card_predict_export_plots_or_the_slurm_check_but_its_own():
    rules = rule_modules()
    closures = {rule: {p.stem for p in module_closure(module)} for rule, module in rules.items()}
    for rule in ("train", "evaluate", "retrieval"):
        assert not closures[rule] & {"modelcard", "predict", "export", "plots", "slurm_check",
                                     "cli", "dicom", "images", "selection"}, rule
    assert "dicom" in closures["image_shard"] and "images" in closures["image_shard"]


def test_behaviour_ignores_comments_docstrings_and_layout_only():
    source = (PACKAGE_DIR / "zeroshot.py").read_text()
    reworded = ("# header\n" + source.replace('"""', '"""Reworded: ', 1)
                .replace("\n\n", "\n\n\n") + "\n# end\n")
    assert behaviour(reworded) == behaviour(source)
    assert behaviour(source.replace("np.stack(arrays), axis=0", "np.stack(arrays), axis=1")) \
        != behaviour(source)
    assert behaviour(source + "\nX = 1\n") != behaviour(source)


if __name__ == "__main__":  # python tests/test_code_reruns.py rewrites the table in the docs
    head, rest = DOC.read_text().split(TABLE_START)
    DOC.write_text(f"{head}{TABLE_START}\n{module_table()}\n{TABLE_END}{rest.split(TABLE_END)[1]}")
