"""``chexdino scorecard``: every evaluation set's AUROC table and retrieval recalls as text."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from chexdino.errors import ChexdinoError
from chexdino.retrieval import format_recall
from chexdino.scorecard import format_table


def scorecard_text(results: Path) -> str:
    """The AUROC tables (and retrieval recalls) of every evaluation set under ``results``."""
    summaries = sorted(Path(results).glob("eval/*/summary.json"))
    if not summaries:
        raise ChexdinoError(f"no eval/*/summary.json under {results}: run the workflow first")
    parts = []
    for path in summaries:
        table = pd.read_csv(path.with_name("auroc.csv"), keep_default_na=False,
                            na_values=[""])
        summary = json.loads(path.read_text())
        parts += [f"\n== zero-shot scorecard: {path.parent.name} ==",
                  format_table(table, summary.get("headline", summary))]
        retrieval = path.with_name("retrieval.csv")
        if retrieval.is_file():
            parts += [f"\n== retrieval (study level): {path.parent.name} ==",
                      format_recall(pd.read_csv(retrieval))]
    return "\n".join(parts)
