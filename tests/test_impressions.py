"""Tests for impression extraction: MIMIC-CXR section semantics, fallbacks and rejects."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from chexdino.errors import ReportReadError
from chexdino.impressions import (
    clean_text,
    extract_impression,
    extract_impressions,
    impression_summary,
    normalize_section_name,
    read_report,
    split_sections,
)

BANNER = "                                 FINAL REPORT\n"

STANDARD = BANNER + (
    " EXAMINATION:  CHEST (PA AND LAT)\n"
    " \n"
    " INDICATION:  ___ year old woman with cough and fever  // eval for pneumonia\n"
    " \n"
    " TECHNIQUE:  Chest PA and lateral\n"
    " \n"
    " COMPARISON:  ___\n"
    " \n"
    " FINDINGS: \n"
    " \n"
    " There is no focal consolidation, pleural effusion or pneumothorax.  The\n"
    " cardiomediastinal silhouette is normal.\n"
    " \n"
    " IMPRESSION: \n"
    " \n"
    " No acute cardiopulmonary process.\n"
)

WET_READ_THEN_FINAL = (
    " WET READ: ___ ___ ___ 10:15 PM\n"
    "  Interval increase in right pleural effusion.\n"
    " ______________________________________________________________________________\n"
    + BANNER
    + " INDICATION:  ___M with dyspnea.\n"
    " \n"
    " COMPARISON:  Radiograph from ___.\n"
    " \n"
    " IMPRESSION:  Moderate right pleural effusion, increased since ___.  Mild\n"
    " pulmonary edema.\n"
    " \n"
    " NOTIFICATION:  The findings were discussed with Dr. ___ by ___ on the telephone\n"
    " on ___ at 9:30 AM.\n"
)

HEADER_ONLY = BANNER + (
    " EXAMINATION:  CHEST (PORTABLE AP)\n"
    " \n"
    " INDICATION:  ___ year old man with shortness of breath\n"
    " \n"
    " TECHNIQUE:  Portable AP chest\n"
    " \n"
    " COMPARISON:  None.\n"
)


def test_standard_report_takes_impression_and_strips_deid() -> None:
    assert extract_impression(STANDARD) == ("No acute cardiopulmonary process.", "impression")


def test_impression_text_on_header_line_and_continuation_kept() -> None:
    text, source = extract_impression(WET_READ_THEN_FINAL)
    assert source == "impression"
    assert text == "Moderate right pleural effusion, increased since. Mild pulmonary edema."
    assert "___" not in text and "Dr." not in text  # notification is its own section


def test_multiple_impressions_take_the_last_non_empty() -> None:
    report = BANNER + (
        " IMPRESSION:  Preliminary: no pneumothorax.\n"
        " \n"
        " FINDINGS:  Left chest tube in place. No pneumothorax.\n"
        " \n"
        " IMPRESSION:  No pneumothorax after chest tube placement.\n"
        " \n"
        " IMPRESSION:  ___\n"
    )
    assert extract_impression(report) == (
        "No pneumothorax after chest tube placement.",
        "impression",
    )


@pytest.mark.parametrize(
    "header",
    [
        "CONCLUSION",
        "CONCLUSIONS",
        "SUMMARY",
        "FINDINGS AND IMPRESSION",
        "FINDINGS/IMPRESSION",
        "IMPRESSION AND RECOMMENDATIONS",
        "IMPRESSON",
        "Impression",
    ],
)
def test_impression_synonyms(header: str) -> None:
    report = BANNER + (
        " INDICATION:  ___ with chest pain.\n"
        " \n"
        " FINDINGS:  Heart size is normal.  Lungs are clear.\n"
        " \n"
        f" {header}:  Normal chest radiograph.\n"
    )
    assert extract_impression(report) == ("Normal chest radiograph.", "impression")


def test_findings_and_impression_beats_earlier_findings_section() -> None:
    report = BANNER + (
        " FINDINGS:  See below.\n"
        " \n"
        " FINDINGS AND IMPRESSION:\n"
        " 1.  Endotracheal tube terminates 4 cm above the carina.\n"
        " 2.  Right basilar atelectasis.\n"
    )
    text, source = extract_impression(report)
    assert source == "impression"
    assert text == (
        "1. Endotracheal tube terminates 4 cm above the carina. 2. Right basilar atelectasis."
    )


def test_no_impression_falls_back_to_last_findings() -> None:
    report = BANNER + (
        " HISTORY:  ___-year-old with fever.\n"
        " \n"
        " FINDINGS:  \n"
        " \n"
        " FINDINGS:  Frontal and lateral views of the chest.  Lungs are clear.  No\n"
        " pleural effusion.\n"
        " \n"
        " COMPARISON:  ___.\n"
    )
    assert extract_impression(report) == (
        "Frontal and lateral views of the chest. Lungs are clear. No pleural effusion.",
        "findings",
    )


def test_empty_impression_falls_back_to_findings() -> None:
    report = BANNER + " FINDINGS:  Small left effusion.\n \n IMPRESSION:  ___.\n"
    assert extract_impression(report) == ("Small left effusion.", "findings")


def test_film_description_header_counts_as_findings() -> None:
    report = BANNER + (
        " HISTORY:  Cough.\n"
        " \n"
        " CHEST, PA AND LATERAL:  The lungs are clear without consolidation.\n"
    )
    assert extract_impression(report) == (
        "The lungs are clear without consolidation.",
        "findings",
    )


def test_no_headers_takes_last_paragraph_not_banner() -> None:
    report = BANNER + (
        " PORTABLE CHEST, ___\n"
        " \n"
        " Comparison is made to the previous study from ___.\n"
        " \n"
        " Endotracheal tube terminates 4 cm above the carina.  Lungs\n"
        " are clear.\n"
        " \n"
    )
    assert extract_impression(report) == (
        "Endotracheal tube terminates 4 cm above the carina. Lungs are clear.",
        "last_paragraph",
    )


def test_prose_after_header_value_is_last_paragraph() -> None:
    # MIMIC: radiologists sometimes write the whole report under COMPARISON.
    report = BANNER + (
        " INDICATION:  ___ with cough.\n"
        " \n"
        " COMPARISON:  ___.\n"
        " \n"
        " Heart size is normal.  No pneumonia.\n"
    )
    assert extract_impression(report) == ("Heart size is normal. No pneumonia.", "last_paragraph")


def test_header_only_report_is_empty() -> None:
    assert extract_impression(HEADER_ONLY) == ("", "empty")
    # header values must never be taken as the last paragraph, even spread over lines
    spread = BANNER + " INDICATION:\n \n ___ with dyspnea.\n \n TECHNIQUE:\n  Portable AP.\n"
    assert extract_impression(spread) == ("", "empty")


def test_wet_read_alone_is_not_an_impression() -> None:
    report = (
        " WET READ: ___ ___ ___ 2:15 PM\n  No acute process.\n"
        " ______________________________________________________________________________\n"
        + HEADER_ONLY
    )
    assert extract_impression(report) == ("", "empty")


def test_addendum_after_impression_is_not_the_impression() -> None:
    report = STANDARD + (" \n ADDENDUM:  Findings were discussed with Dr. ___ at 4:30 PM on ___.\n")
    assert extract_impression(report) == ("No acute cardiopulmonary process.", "impression")


def test_impression_only_inside_addendum_is_taken() -> None:
    report = BANNER + (
        " FINDINGS:  Lungs are clear.\n"
        " \n"
        "                                 ADDENDUM\n"
        " On review with the attending, a small right apical pneumothorax is present.\n"
        " \n"
        " IMPRESSION:  Small right apical pneumothorax.\n"
    )
    assert extract_impression(report) == ("Small right apical pneumothorax.", "impression")


def test_main_report_impression_wins_over_later_addendum_impression() -> None:
    report = STANDARD + " \n ADDENDUM:\n IMPRESSION:  Addendum impression.\n"
    assert extract_impression(report) == ("No acute cardiopulmonary process.", "impression")


def test_final_report_banner_ends_a_leading_addendum() -> None:
    report = (
        " ADDENDUM:\n IMPRESSION:  Addendum impression.\n \n"
        + BANNER
        + " FINDINGS:  Lungs clear.\n"
    )
    flags = [(s.name, s.in_addendum) for s in split_sections(report)]
    assert flags == [("addendum", True), ("impression", True), ("findings", False)]
    # the addendum's impression still outranks the main report's findings
    assert extract_impression(report) == ("Addendum impression.", "impression")


def test_addendum_prose_is_last_resort() -> None:
    report = HEADER_ONLY + " \n ADDENDUM:  Right lower lobe opacity, likely pneumonia.\n"
    assert extract_impression(report) == (
        "Right lower lobe opacity, likely pneumonia.",
        "last_paragraph",
    )


def test_split_sections_names_and_addendum_flags() -> None:
    report = STANDARD + " ADDENDUM:  Called.\n IMPRESSION:  Later.\n"
    sections = split_sections(report)
    assert [s.name for s in sections] == [
        "examination",
        "indication",
        "technique",
        "comparison",
        "findings",
        "impression",
        "addendum",
        "impression",
    ]
    assert [s.in_addendum for s in sections] == [False] * 6 + [True, True]


def test_prose_with_colon_and_times_is_not_a_header() -> None:
    report = BANNER + (
        " FINDINGS:  Lines and tubes:\n"
        " Dr. ___ was paged at 10:15 AM: no answer.\n"
        " 10:30: right IJ line unchanged.\n"
    )
    assert [s.name for s in split_sections(report)] == ["findings"]


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("IMPRESSION", "impression"),
        ("Conclusions", "impression"),
        ("FINAL CONCLUSION", "impression"),
        ("impression and recommendations", "impression"),
        ("FINDINGS / IMPRESSION", "impression"),
        ("OBSERVATIONS", "findings"),
        ("FINDING", "findings"),
        ("PA AND LATERAL VIEWS OF THE CHEST", "findings"),
        ("REASON FOR EXAM", "indication"),
        ("CLINICAL HISTORY", "history"),
        ("COMPARISONS", "comparison"),
        ("WETREAD", "wet read"),
        ("RECOMMENDATION(S)", "recommendations"),
        ("SOMETHING ELSE", "something else"),
    ],
)
def test_normalize_section_name(raw: str, canonical: str) -> None:
    assert normalize_section_name(raw) == canonical


def test_clean_text() -> None:
    assert clean_text("  Dr. ___ was\n notified  ____ at\t___.\n") == "Dr. was notified at."
    assert clean_text("left_sided  x") == "left_sided x"  # a single underscore is not de-id
    assert clean_text("Keep CASE; and punctuation!") == "Keep CASE; and punctuation!"
    assert clean_text(" \n ___ \n") == ""


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_read_report_strips_bom_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, "s1.txt", b"\xef\xbb\xbf FINDINGS:  Clear.\r\n IMPRESSION:  Normal.\r\n")
    text = read_report(path)
    assert text == " FINDINGS:  Clear.\n IMPRESSION:  Normal.\n"
    assert extract_impression(text) == ("Normal.", "impression")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "report file is binary (contains NUL bytes)"),
        (" IMPRESSION:  Caf\xe9 normal.\n".encode("latin-1"), "report file is not valid UTF-8"),
    ],
)
def test_read_report_rejects_undecodable(tmp_path: Path, content: bytes, reason: str) -> None:
    path = write(tmp_path, "bad.txt", content)
    with pytest.raises(ReportReadError) as info:
        read_report(path)
    assert info.value.reason == reason
    assert str(path) in str(info.value)


def test_read_report_missing(tmp_path: Path) -> None:
    with pytest.raises(ReportReadError) as info:
        read_report(tmp_path / "nope.txt")
    assert info.value.reason == "report file not found"


def test_extract_impressions_every_study_lands_once(tmp_path: Path) -> None:
    files = {
        "50000001": write(tmp_path, "s50000001.txt", STANDARD),
        "50000002": write(tmp_path, "s50000002.txt", WET_READ_THEN_FINAL),
        "50000003": write(tmp_path, "s50000003.txt", BANNER + " FINDINGS:  Clear lungs.\n"),
        "50000004": write(tmp_path, "s50000004.txt", BANNER + " \n No acute process.\n"),
        "50000005": write(tmp_path, "s50000005.txt", HEADER_ONLY),
        "50000006": write(tmp_path, "s50000006.txt", ""),
        "50000007": write(tmp_path, "s50000007.txt", " \n\t\n  \n"),
        "50000008": write(tmp_path, "s50000008.txt", b"\x00\x01\x02binary"),
        "50000009": write(tmp_path, "s50000009.txt", b" IMPRESSION: \xff\xfe bad\n"),
        "50000010": tmp_path / "s50000010.txt",  # never written
    }
    studies = pd.DataFrame(
        {"study_id": [int(s) for s in files], "report_path": [str(p) for p in files.values()]}
    )
    impressions, rejects = extract_impressions(studies, show_progress=False)

    assert list(impressions.columns) == ["study_id", "impression", "impression_source"]
    assert list(rejects.columns) == ["study_id", "report_path", "reason"]
    assert sorted([*impressions["study_id"], *rejects["study_id"]]) == sorted(files)
    assert dict(zip(impressions["study_id"], impressions["impression_source"], strict=True)) == {
        "50000001": "impression",
        "50000002": "impression",
        "50000003": "findings",
        "50000004": "last_paragraph",
    }
    assert dict(zip(rejects["study_id"], rejects["reason"], strict=True)) == {
        "50000005": "no usable text in report",
        "50000006": "report file is empty",
        "50000007": "report file is empty",
        "50000008": "report file is binary (contains NUL bytes)",
        "50000009": "report file is not valid UTF-8",
        "50000010": "report file not found",
    }
    assert rejects.set_index("study_id").loc["50000010", "report_path"] == str(files["50000010"])
    # the CheXzero placeholder must never be produced, and every kept text is non-empty
    assert not impressions["impression"].str.contains("NO IMPRESSION", case=False).any()
    assert (impressions["impression"].str.strip() != "").all()

    summary = impression_summary(impressions, rejects)
    assert summary["n_studies"] == len(files) == summary["n_impressions"] + summary["n_rejects"]
    assert summary["sources"] == {"impression": 2, "findings": 1, "last_paragraph": 1}
    assert sum(summary["sources"].values()) == summary["n_impressions"]
    assert summary["reject_reasons"]["report file is empty"] == 2
    assert sum(summary["reject_reasons"].values()) == summary["n_rejects"]


def test_extract_impressions_empty_input_and_missing_column() -> None:
    impressions, rejects = extract_impressions(
        pd.DataFrame({"study_id": [], "report_path": []}), show_progress=False
    )
    assert impressions.empty and rejects.empty
    assert impression_summary(impressions, rejects)["n_studies"] == 0
    with pytest.raises(Exception, match="report_path"):
        extract_impressions(pd.DataFrame({"study_id": ["1"]}), show_progress=False)


def test_enormous_report_is_parsed_quickly(tmp_path):
    """A 20 MB report (a broken export) is parsed in well under a second, not hung on."""
    import time

    body = ("No pleural effusion. " * 50 + "\n") * 20000
    path = tmp_path / "s1.txt"
    path.write_text(f"FINAL REPORT\n FINDINGS: {body}\n IMPRESSION: Cardiomegaly.\n")
    started = time.monotonic()
    impression, source = extract_impression(read_report(path))
    assert (impression, source) == ("Cardiomegaly.", "impression")
    assert time.monotonic() - started < 5


def test_words_hyphenated_at_a_line_break_are_rejoined(tmp_path: Path) -> None:
    report = write(tmp_path, "s1.txt", BANNER + (
        " FINDINGS:  Lungs are well-\n expanded.\n \n"
        " IMPRESSION:  Small left-\n sided pleural effusion, 2-\n 3 cm. New right -\n"
        " no change in the left lung.\n"))
    impressions, _ = extract_impressions(pd.DataFrame({"study_id": ["1"],
                                                       "report_path": [str(report)]}),
                                         show_progress=False)
    assert impressions["impression"].tolist() == [
        "Small left-sided pleural effusion, 2-3 cm. New right - no change in the left lung."]
    assert clean_text("Lungs are well-\n   expanded.") == "Lungs are well-expanded."
    assert clean_text("Severe EDEMA-\n Mild") == "Severe EDEMA- Mild"  # a capital: not a word


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Comparison ___, ___.", "Comparison."),
        ("Chest x-___ .", "Chest x."),
        ("___-year-old female with chest pain.", "year-old female with chest pain."),
        ("Increased since ___. ___ Stable cardiomegaly.", "Increased since. Stable cardiomegaly."),
        ("Effusion seen on ___, and it is smaller.", "Effusion seen on, and it is smaller."),
        ("Discussed with Dr. ___ by ___ on ___ at 9:30 AM.",
         "Discussed with Dr. by on at 9:30 AM."),
        ("No change (___).", "No change."),
        ("Stable since (___) with a small effusion.", "Stable since with a small effusion."),
        ("Keep . spaces , that were typed .", "Keep . spaces , that were typed ."),
    ],
)
def test_removed_marks_leave_no_seams(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_seams_are_tidied_in_a_report_file(tmp_path: Path) -> None:
    report = write(tmp_path, "s2.txt", BANNER + (
        " COMPARISON:  ___, ___.\n \n"
        " IMPRESSION:  Chest x-___ . Moderate right effusion, increased since ___.\n"
        " ___ Mild pulmonary edema.\n"))
    text, source = extract_impression(read_report(report))
    assert (text, source) == (
        "Chest x. Moderate right effusion, increased since. Mild pulmonary edema.", "impression")
