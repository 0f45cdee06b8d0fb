#!/usr/bin/env bash
# Run by Snakemake (--software-deployment-method conda) inside the environment it has just
# built from environment.yml: installs chexdino itself, editable, from the workflow's folder
# (CHEXDINO_SOURCE, set by workflow/rules/common.smk), as `make env` does for .venv. Editable:
# the rules declare the source files they run as inputs, and an edit must reach the jobs.
set -euo pipefail
if [[ -z "${CHEXDINO_SOURCE:-}" || ! -f "${CHEXDINO_SOURCE}/pyproject.toml" ]]; then
    echo "environment.post-deploy.sh: CHEXDINO_SOURCE='${CHEXDINO_SOURCE:-}' is not the" \
        "chexdino folder (the workflow sets it; run this through snakemake)" >&2
    exit 1
fi
python -m pip install --quiet --no-deps -e "${CHEXDINO_SOURCE}"
