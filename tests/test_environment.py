"""environment.yml (conda) and requirements.txt (the venv of `make env`) are one environment,
and it is the one every rule's ``conda:`` names."""

from __future__ import annotations

import re
import sys

import yaml

from conftest import REPO

ENVIRONMENT = REPO / "environment.yml"


def pins(lines: list[str]) -> dict[str, str]:
    """``name==version`` lines as {normalised name: version}; comments and blanks skipped.
    Anything but an exact pin fails: both files are lock files."""
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and version and not re.search(r"[<>=!~;, ]", version), f"not a pin: {line}"
        found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def test_environment_yml_pins_the_versions_of_requirements_txt():
    env = yaml.safe_load(ENVIRONMENT.read_text())
    assert env["channels"][0] == "conda-forge"
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert conda == ["python=3.11", "pip"], conda
    assert sys.version_info[:2] == (3, 11)  # the venv's Python is the one conda installs
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    required = pins((REPO / "requirements.txt").read_text().splitlines())
    pinned = pins(pip)
    assert pinned == required, {
        "only in environment.yml": sorted(pinned.items() - required.items()),
        "only in requirements.txt": sorted(required.items() - pinned.items())}
    assert {"torch", "snakemake", "timm", "open-clip-torch"} <= set(pinned)


def test_every_rule_runs_in_that_environment():
    """Each rule with a command names environment.yml; Snakemake finds the post-deploy
    script that installs chexdino beside it (same name, ``.post-deploy.sh``)."""
    rules, envs = [], {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"^(?=rule \w+:)", text, flags=re.M)[1:]:
            name = re.match(r"rule (\w+):", block).group(1)
            rules.append(name)
            conda = re.search(r"^    conda:\n\s+\"([^\"]+)\"", block, flags=re.M)
            envs[name] = (smk.parent / conda.group(1)).resolve() if conda else None
    assert len(rules) >= 15, rules
    assert {name: path for name, path in envs.items() if path != ENVIRONMENT} == {}
    assert ENVIRONMENT.with_suffix(".post-deploy.sh").is_file()
    assert not (REPO / "workflow" / "envs").exists()  # no second, unused definition
