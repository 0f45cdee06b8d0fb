"""Workflow hygiene enforced by the suite: snakefmt formatting and a clean `snakemake --lint`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_snakefmt_check():
    result = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakemake_lint_is_clean(small_demo, tmp_path):
    root, _ = small_demo
    m = root / "mimic"
    overlay = tmp_path / "paths.yaml"
    overlay.write_text(yaml.safe_dump({
        "results": str(tmp_path / "results"),
        "mimic": {"image_root": str(m), "report_root": str(m),
                  "split_csv": str(m / "mimic-cxr-2.0.0-split.csv.gz"),
                  "metadata_csv": str(m / "mimic-cxr-2.0.0-metadata.csv.gz"),
                  "chexpert_csv": str(m / "mimic-cxr-2.0.0-chexpert.csv.gz")},
        "chexpert_test": {"groundtruth_csv": str(root / "chexpert" / "groundtruth.csv"),
                          "image_root": str(root / "chexpert" / "CheXpert-v1.0")},
    }))
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run([str(BIN / "snakemake"), "--lint", "--configfile",
                             "tests/demo/config.yaml", str(overlay)], cwd=REPO, env=env,
                            capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Lints for" not in output, output
