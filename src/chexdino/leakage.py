"""The leakage guard: no patient of the training split may appear in an evaluation set drawn
from the same source (MIMIC-CXR's validate and test splits, or any other MIMIC-derived set).

With the official split no patient spans two splits; a custom split that leaks stops the run
before training, naming the patients and the sets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from chexdino.errors import ChexdinoError

TRAIN_SPLIT = "train"
SHOWN = 5
"""Leaking patients named in the error message (the count is always given)."""


def _subjects(manifest_csv: Path) -> pd.DataFrame:
    """``subject_id`` and ``split`` of a manifest, as strings."""
    try:
        table = pd.read_csv(manifest_csv, usecols=["subject_id", "split"], dtype=str,
                            keep_default_na=False)
    except ValueError as exc:
        raise ChexdinoError(f"{manifest_csv}: needs subject_id and split columns ({exc})") from None
    return table


def patient_leaks(manifest_csv: Path, others: Mapping[str, Path] | None = None
                  ) -> dict[str, Any]:
    """Patients of ``manifest_csv``'s train split found in its other splits (each one an
    evaluation set) and in every manifest of ``others`` (name -> manifest, all rows).

    Returns ``{"train_patients", "sets": {name: {"patients", "leaks": [ids]}}, "leaks"}``.
    """
    table = _subjects(manifest_csv)
    train = set(table.loc[table["split"] == TRAIN_SPLIT, "subject_id"])
    sets = {f"mimic_{split}": set(rows["subject_id"])
            for split, rows in table[table["split"] != TRAIN_SPLIT].groupby("split")}
    for name, path in (others or {}).items():
        sets[name] = set(_subjects(Path(path))["subject_id"])
    checked = {name: {"patients": len(ids), "leaks": sorted(ids & train)}
               for name, ids in sorted(sets.items())}
    leaking = set().union(*(set(v["leaks"]) for v in checked.values())) if checked else set()
    return {"train_patients": len(train), "sets": checked, "leaks": len(leaking),
            "leaking_patients": sorted(leaking)}


def check_leakage(manifest_csv: Path, out_json: Path,
                  others: Mapping[str, Path] | None = None) -> dict[str, Any]:
    """Write the check's record to ``out_json`` when no patient leaks; otherwise raise an
    error naming the first leaking patients, their count and the sets they appear in."""
    result = patient_leaks(manifest_csv, others)
    if result["leaks"]:
        ids = result["leaking_patients"]
        where = ", ".join(f"{name} ({len(v['leaks'])})" for name, v in result["sets"].items()
                          if v["leaks"])
        more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
        raise ChexdinoError(
            f"{manifest_csv}: {len(ids)} patient(s) of the training split also appear in "
            f"evaluation sets from the same source: {where}; subject_id {', '.join(ids[:SHOWN])}"
            f"{more}. Training on them would inflate every evaluation score: split by patient "
            "(the official MIMIC-CXR split does).")
    record = {k: v for k, v in result.items() if k != "leaking_patients"}
    record["sets"] = {name: {"patients": v["patients"], "leaks": 0}
                      for name, v in result["sets"].items()}
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(record, indent=2) + "\n")
    return record


def leakage_text(record: Mapping[str, Any]) -> str:
    """One sentence for the landing page: what was checked and that nothing leaked."""
    sets = ", ".join(f"{name} ({v['patients']})" for name, v in record["sets"].items())
    return (f"Leakage check: the {record['train_patients']} training patients against "
            f"{sets or 'no evaluation set'} patients: {record['leaks']} shared.")
