"""The leakage guard: a training patient in a same-source evaluation set stops the run."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from chexdino.cli import main
from chexdino.errors import ChexdinoError
from chexdino.leakage import check_leakage, leakage_text


def manifest(path, rows):
    pd.DataFrame(rows, columns=["dicom_id", "subject_id", "split"]).to_csv(path, index=False)
    return path


CLEAN = [("d1", "10000001", "train"), ("d2", "10000001", "train"), ("d3", "10000002", "train"),
         ("d4", "10000003", "validate"), ("d5", "10000004", "test"), ("d6", "10000005", "test")]


def test_a_patient_split_passes_and_records_what_was_checked(tmp_path):
    out = tmp_path / "leakage.json"
    record = check_leakage(manifest(tmp_path / "m.csv", CLEAN), out)
    assert json.loads(out.read_text()) == record == {
        "train_patients": 2, "leaks": 0,
        "sets": {"mimic_test": {"patients": 2, "leaks": 0},
                 "mimic_validate": {"patients": 1, "leaks": 0}}}
    assert "2 training patients" in leakage_text(record) and "0 shared" in leakage_text(record)


def test_a_split_that_leaks_stops_naming_the_patients_and_the_sets(tmp_path):
    leaky = [*CLEAN, ("d7", "10000002", "test"),
             *((f"e{i}", f"2000000{i}", s) for i in range(7) for s in ("train", "validate"))]
    out = tmp_path / "leakage.json"
    with pytest.raises(ChexdinoError) as err:
        check_leakage(manifest(tmp_path / "m.csv", leaky), out)
    text = str(err.value)
    assert "8 patient(s)" in text and "mimic_test (1)" in text and "mimic_validate (7)" in text
    assert "subject_id 10000002, 20000000, 20000001, 20000002, 20000003 and 3 more" in text
    assert not out.exists()
    # another MIMIC-derived set is checked too, through the command the rule runs
    clean = manifest(tmp_path / "c.csv", CLEAN)
    other = manifest(tmp_path / "other.csv", [("x", "10000001", "")])
    status = main(["leakage-check", "--manifest", str(clean), "--out", str(out),
                   "--other", f"mimic_lt={other}"])
    assert status == 2 and not out.exists()
