"""Every job runs the ``chexdino`` of the environment that planned the run.

A SLURM job starts with the user's login PATH, which need not hold the virtual environment
(``.venv/bin/snakemake`` runs without activating it): each job's shell then says
``chexdino: command not found``. Snakemake starts every job with the interpreter that runs
the workflow, so putting that interpreter's folder first on PATH (in the planning process and
again in every job process, which re-reads the workflow) makes each job's shell find the
same ``chexdino``.

With ``--software-deployment-method conda`` each job runs in the environment Snakemake builds
from ``environment.yml`` instead; its post-deploy script installs chexdino from the folder
named by ``CHEXDINO_SOURCE`` (:func:`export_source_folder`).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path


def put_planning_environment_first(executable: str,
                                   environ: MutableMapping[str, str] = os.environ) -> bool:
    """Put the folder of ``executable`` first on ``environ["PATH"]`` if it holds chexdino.

    Returns whether PATH was changed (not when the folder is first already, or when chexdino
    was installed elsewhere and PATH is left to find it).
    """
    bindir = str(Path(executable).parent)
    if not (Path(bindir) / "chexdino").exists():
        return False
    path = environ.get("PATH", "")
    if path.split(os.pathsep)[0] == bindir:
        return False
    environ["PATH"] = bindir + os.pathsep + path if path else bindir
    return True


def export_source_folder(folder: str, environ: MutableMapping[str, str] = os.environ) -> None:
    """Name the workflow's folder in ``CHEXDINO_SOURCE`` for ``environment.post-deploy.sh``,
    which Snakemake runs in the processes that plan the run (a copy of the script runs from
    ``.snakemake/conda/``, so the script cannot find the source from where it lies)."""
    environ["CHEXDINO_SOURCE"] = str(Path(folder).resolve())
