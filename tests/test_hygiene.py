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
