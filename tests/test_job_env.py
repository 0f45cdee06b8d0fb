"""Jobs find the chexdino of the environment that planned the run (chexdino.job_env).

tests/test_slurm.py runs the whole workflow on SLURM with the environment off PATH; here the
rule itself, and a Snakemake job's shell in a local run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chexdino.job_env import put_planning_environment_first

BINDIR = Path(sys.executable).parent


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
    run = subprocess.run([str(BINDIR / "snakemake"), "--cores", "1", "-s", str(snakefile),
                          "-d", str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "usage: chexdino" in (tmp_path / "version.txt").read_text()
