"""Jobs find the chexdino of the environment that planned the run (chexdino.job_env).

tests/test_slurm.py runs the whole workflow on SLURM with the environment off PATH; here the
rule itself, and a Snakemake job's shell in a local run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from chexdino.job_env import export_source_folder, put_planning_environment_first
from conftest import BINDIR, REPO, snakemake


def test_the_interpreters_folder_goes_first_when_it_holds_chexdino(tmp_path):
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "chexdino").write_text("#!/bin/sh\n")
    env = {"PATH": "/usr/bin:/bin"}
    assert put_planning_environment_first(str(venv / "python"), env)
    assert env["PATH"] == f"{venv}{os.pathsep}/usr/bin:/bin"
    assert not put_planning_environment_first(str(venv / "python"), env)  # once only
    # An interpreter without chexdino beside it (installed elsewhere): PATH is left alone.
    other = {"PATH": "/usr/bin"}
    assert not put_planning_environment_first(str(tmp_path / "python"), other)
    assert other == {"PATH": "/usr/bin"}


def test_a_local_job_runs_chexdino_with_the_environment_off_path(tmp_path):
    """`.venv/bin/snakemake` without activating the environment: the job's shell finds it."""
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        "import sys\n"
        "from chexdino.job_env import put_planning_environment_first\n"
        "put_planning_environment_first(sys.executable)\n\n"
        "rule version:\n"
        "    output: 'version.txt'\n"
        "    shell: 'chexdino --help > {output}'\n")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if p and Path(p).resolve() != BINDIR.resolve())
    env = dict(os.environ, PATH=path or "/usr/bin:/bin")
    run = snakemake("-s", str(snakefile), "-d", str(tmp_path), cores=1, env=env, check=False,
                    timeout=300)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "usage: chexdino" in (tmp_path / "version.txt").read_text()


def test_the_workflow_names_its_source_for_the_conda_post_deploy_script(tmp_path):
    """environment.post-deploy.sh (run from a copy under .snakemake/conda/) installs chexdino
    from CHEXDINO_SOURCE, and stops with a clear message when that is not this folder."""
    env = {}
    export_source_folder(str(REPO), env)
    assert env == {"CHEXDINO_SOURCE": str(REPO)}
    assert (Path(env["CHEXDINO_SOURCE"]) / "pyproject.toml").is_file()
    script = REPO / "environment.post-deploy.sh"
    run = subprocess.run(["bash", str(script)], env={"PATH": os.environ["PATH"],
                         "CHEXDINO_SOURCE": str(tmp_path)}, capture_output=True, text=True)
    assert run.returncode == 1 and "is not the chexdino folder" in run.stderr
    assert 'pip install --quiet --no-deps -e "${CHEXDINO_SOURCE}"' in script.read_text()
