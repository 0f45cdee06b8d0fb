"""Impression extraction from MIMIC-CXR free-text reports.

Follows the section semantics of MIMIC-CXR's own ``txt/section_parser.py`` (MIT-LCP/mimic-cxr):
headers are capitalised phrases ending in ``:`` at the start of a line, synonyms normalise to a
few canonical names, and the text we train on is the *last* impression, else the last findings,
else the final free-text paragraph. Unlike CheXzero we never invent a placeholder such as
"NO IMPRESSION": a report with no usable text is rejected with a reason instead.

Addendum rule: text after an ``ADDENDUM`` header (or a bare ``ADDENDUM`` banner line) belongs to
the addendum until the next ``FINAL REPORT`` banner. At every tier (impression, findings, last
paragraph) sections of the main report win over sections inside an addendum, so an addendum
written after the impression is never taken as the impression, but an impression that exists
only inside an addendum is used (it still outranks any findings).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from chexdino.errors import ChexdinoError, ReportReadError
from chexdino.tables import IMPRESSION_COLUMNS, REPORT_REJECT_COLUMNS

# Canonical names, as MIMIC's normalize_section_names produces them, plus a few synonyms
# (summary, conclusions, observations, impression and recommendations) it only catches by
# substring. Misspellings are the ones MIMIC-CXR actually contains.
SECTION_SYNONYMS: dict[str, str] = {
    # impression
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "findings/ impression": "impression",
    "impression and recommendations": "impression",
    "impression/recommendations": "impression",
    "impresson": "impression",
    "imprression": "impression",
    "imoression": "impression",
    "impressoin": "impression",
    "imprssion": "impression",
    "impresion": "impression",
    "imperssion": "impression",
    "mpression": "impression",
    "impession": "impression",
    # findings
    "findings": "findings",
    "finding": "findings",
    "observations": "findings",
    "observation": "findings",
    "reference findings": "findings",
    "findins": "findings",
    "findindgs": "findings",
    "findgings": "findings",
    "findngs": "findings",
    "findnings": "findings",
    "finidngs": "findings",
    # header-only sections
    "comparison": "comparison",
    "comparisons": "comparison",
    "comparison exam": "comparison",
    "comparison film": "comparison",
    "reference exam": "comparison",
    "comparision": "comparison",
    "comparsion": "comparison",
    "comparrison": "comparison",
    "comparisions": "comparison",
    "indication": "indication",
    "indications": "indication",
    "clinical indication": "indication",
    "reason for examination": "indication",
    "reason for exam": "indication",
    "idication": "indication",
    "examination": "examination",
    "exam": "examination",
    "type of examination": "examination",
    "technique": "technique",
    "history": "history",
    "clinical history": "history",
    "clinical information": "history",
    "patient history": "history",
    "pfi": "history",
    "notification": "notification",
    "recommendation": "recommendations",
    "recommendations": "recommendations",
    "recommendation(s)": "recommendations",
    "wet read": "wet read",
    "wetread": "wet read",
    "addendum": "addendum",
    "date": "date",
    "comment": "comment",
}

# Substring fallbacks, checked in order (impression first, so "findings and impression" and
# "impression and recommendations" variants land on impression), as MIMIC's main_sections.
_SUBSTRING_SECTIONS = (
    ("impression", "impression"),
    ("conclusion", "impression"),
    ("finding", "findings"),
    ("addendum", "addendum"),
    ("history", "history"),
    ("comparison", "comparison"),
)
# An unknown header that describes the films themselves ("CHEST, PA AND LATERAL:") is findings.
_FINDINGS_LIKE = re.compile(
    r"chest|portable|pa and lat|lateral and pa|ap and lateral|lateral and ap|frontal and"
    r"|two views|frontal view|pa view|ap view|one view|lateral view|bone window"
    r"|frontal upright|frontal semi-upright|ribs"
)

# Sections whose whole text is radiologist prose; every other non-content header's first
# paragraph is the header's value (e.g. "INDICATION: cough") and never the "last paragraph".
_PROSE_SECTIONS = frozenset({"preamble", "addendum"})

_UPPER_HEADER = re.compile(r"^\s*([A-Z][A-Z ()/,&-]*?)\s*:(?:\s*(.*))?$")
_ANY_HEADER = re.compile(r"^\s*([A-Za-z][A-Za-z ()/,&-]*?)\s*:(?:\s*(.*))?$")
_BANNER = re.compile(r"^\s*(?:FINAL|PRELIMINARY) REPORT\s*:?\s*$")
_ADDENDUM_BANNER = re.compile(r"^\s*ADDENDUM\s*$")
_RULE_LINE = re.compile(r"^\s*_{10,}\s*$")
_DEID = re.compile(r"_{2,}")
_MARK = "\x00"  # stands for a removed de-identification mark while the text is tidied
# A run of removed marks with the hyphens stuck to them ("___-year-old") and the spaces and
# separators (, ; :) around them: the seam that removing the marks leaves.
_MARK_RUN = re.compile(rf"[\s,;:]*(?:-?{_MARK}-?[\s,;:]*)+")
_MARK_IN_PARENS = re.compile(rf"\s*\(\s*(?:{_MARK}\s*)+\)")  # "(___)" goes as a whole
_SENTENCE_END = ".!?)"
# A word broken after its hyphen at a line end ("left-\n sided"): the line break goes.
_LINE_END_HYPHEN = re.compile(r"(?<=[A-Za-z0-9])-[ \t]*\n\s*(?=[a-z0-9])")
_WS = re.compile(r"\s+")
_ALNUM = re.compile(r"[A-Za-z0-9]")

IMPRESSION_SOURCES = ("impression", "findings", "last_paragraph", "empty")
REASON_EMPTY_FILE = "report file is empty"
REASON_NO_TEXT = "no usable text in report"


@dataclass
class Section:
    """One report section: canonical name, raw lines (header-line text first), addendum flag."""

    name: str
    lines: list[str] = field(default_factory=list)
    in_addendum: bool = False

    @property
    def text(self) -> str:
        """Raw section text, so callers can clean it once."""
        return "\n".join(self.lines)


def normalize_section_name(header: str) -> str:
    """Map a raw header to MIMIC's canonical name so synonyms and typos select alike."""
    name = _WS.sub(" ", header.strip().lower())
    if name in SECTION_SYNONYMS:
        return SECTION_SYNONYMS[name]
    for needle, canonical in _SUBSTRING_SECTIONS:
        if needle in name:
            return canonical
    if _FINDINGS_LIKE.search(name):
        return "findings"
    return name


def _match_header(line: str) -> tuple[str, str] | None:
    """Return (canonical name, rest of line) if the line opens a section, else None.

    Upper-case headers are always headers (MIMIC's rule); other casings only when the name is a
    known synonym, so prose such as "Dr. X was paged at 10:15:" is never split.
    """
    if _ADDENDUM_BANNER.match(line):
        return "addendum", ""
    m = _UPPER_HEADER.match(line)
    if m is None:
        m = _ANY_HEADER.match(line)
        if m is None or _WS.sub(" ", m.group(1).strip().lower()) not in SECTION_SYNONYMS:
            return None
    return normalize_section_name(m.group(1)), m.group(2) or ""


def split_sections(text: str) -> list[Section]:
    """Split a report into sections in document order, tracking which lie inside an addendum."""
    sections = [Section("preamble")]
    in_addendum = False
    for line in text.splitlines():
        if _BANNER.match(line):
            in_addendum = False
            sections.append(Section("preamble"))
            continue
        header = _match_header(line)
        if header is None:
            sections[-1].lines.append(line)
            continue
        name, rest = header
        if name == "addendum":
            in_addendum = True
        sections.append(Section(name, [rest], in_addendum))
    return [s for s in sections if s.lines or s.name != "preamble"]


def _paragraphs(lines: list[str]) -> list[str]:
    """Blank-line (or ``____`` rule-line) separated blocks with some non-blank text."""
    blocks: list[list[str]] = [[]]
    for line in lines:
        if not line.strip() or _RULE_LINE.match(line):
            blocks.append([])
        else:
            blocks[-1].append(line)
    return ["\n".join(b) for b in blocks if b]


def _free_paragraphs(section: Section) -> list[str]:
    """Paragraphs that are prose, not the value of a header such as INDICATION."""
    paragraphs = _paragraphs(section.lines)
    return paragraphs if section.name in _PROSE_SECTIONS else paragraphs[1:]


def clean_text(text: str) -> str:
    """Drop de-identification marks and collapse whitespace, keeping case and punctuation.

    Words hyphenated at a line break are rejoined ("left-sided", not "left- sided"), and the
    seam a removed mark leaves is tidied: "increased since ___." -> "increased since.",
    "Comparison ___, ___." -> "Comparison.", "___-year-old" -> "year-old". A mark between two
    sentences leaves a space, so sentences are never merged.
    """
    text = _LINE_END_HYPHEN.sub("-", text.replace(_MARK, " "))
    text = _MARK_IN_PARENS.sub(_MARK, _DEID.sub(_MARK, text))
    text = _MARK_RUN.sub(_close_seam, text)
    return _WS.sub(" ", text).strip()


def _close_seam(match: re.Match[str]) -> str:
    """What replaces a run of removed marks: nothing before a sentence end or at the start
    of the text; otherwise a space, after the run's last comma/semicolon/colon, if any."""
    text, start, end = match.string, match.start(), match.end()
    if start == 0 or end == len(text) or text[end] in _SENTENCE_END:
        return ""
    separators = [c for c in match.group() if c in ",;:"]
    return (separators[-1] if separators else "") + " "


def _usable(text: str) -> bool:
    """A cleaned text is usable only if it has a letter or digit (not just "." left by ___)."""
    return _ALNUM.search(text) is not None


def extract_impression(text: str) -> tuple[str, str]:
    """Return (cleaned impression, source); source is one of ``IMPRESSION_SOURCES``.

    Order: last impression, last findings, last free paragraph; main report before addendum at
    each tier. Returns ("", "empty") rather than a placeholder when nothing is usable.
    """
    sections = split_sections(text)
    for name in ("impression", "findings"):
        for addendum in (False, True):
            for section in reversed(sections):
                if section.name == name and section.in_addendum == addendum:
                    cleaned = clean_text(section.text)
                    if _usable(cleaned):
                        return cleaned, name
    for addendum in (False, True):
        for section in reversed(sections):
            if section.in_addendum != addendum:
                continue
            for paragraph in reversed(_free_paragraphs(section)):
                cleaned = clean_text(paragraph)
                if _usable(cleaned):
                    return cleaned, "last_paragraph"
    return "", "empty"


def read_report(path: Path) -> str:
    """Read a report as UTF-8 text; raise ReportReadError with a reject-table reason otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ReportReadError(path, "report file not found") from None
    except IsADirectoryError:
        raise ReportReadError(path, "report path is a directory") from None
    except OSError as exc:
        raise ReportReadError(path, f"cannot read report file ({type(exc).__name__})") from exc
    if b"\x00" in data:
        raise ReportReadError(path, "report file is binary (contains NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReportReadError(path, "report file is not valid UTF-8") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _progress(iterable: Any, total: int, show: bool) -> Any:
    """Wrap in a tqdm bar when tqdm is installed, so long runs show they are alive."""
    if not show:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc="impressions", unit="report")


def extract_impressions(
    studies: pd.DataFrame, *, show_progress: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Extract one impression per study; every study lands in exactly one of the two tables.

    ``studies`` needs columns ``study_id, report_path``. Returns ``impressions``
    (study_id, impression, impression_source) and ``rejects`` (study_id, report_path, reason).
    """
    missing = {"study_id", "report_path"} - set(studies.columns)
    if missing:
        raise ChexdinoError(f"studies table lacks column(s) {sorted(missing)} for report reading")
    kept: list[tuple[str, str, str]] = []
    rejected: list[tuple[str, str, str]] = []
    rows = zip(studies["study_id"], studies["report_path"], strict=True)
    for study_id, report_path in _progress(rows, len(studies), show_progress):
        study_id = str(study_id)
        try:
            text = read_report(Path(report_path))
        except ReportReadError as exc:
            rejected.append((study_id, str(report_path), exc.reason))
            continue
        impression, source = extract_impression(text)
        if source == "empty":
            reason = REASON_EMPTY_FILE if not text.strip() else REASON_NO_TEXT
            rejected.append((study_id, str(report_path), reason))
        else:
            kept.append((study_id, impression, source))
    impressions = pd.DataFrame(kept, columns=list(IMPRESSION_COLUMNS))
    rejects = pd.DataFrame(rejected, columns=list(REPORT_REJECT_COLUMNS))
    return impressions.astype(str), rejects.astype(str)


def impression_summary(impressions: pd.DataFrame, rejects: pd.DataFrame) -> dict[str, Any]:
    """Count sources and reject reasons, so the report shows how many rows fell back."""
    sources = Counter(impressions["impression_source"])
    return {
        "n_studies": len(impressions) + len(rejects),
        "n_impressions": len(impressions),
        "n_rejects": len(rejects),
        "sources": {s: int(sources.get(s, 0)) for s in IMPRESSION_SOURCES if s != "empty"},
        "reject_reasons": {str(k): int(v) for k, v in Counter(rejects["reason"]).most_common()},
    }


def write_impressions(split_csv: Path, report_root: Path, out_csv: Path,
                      rejects_csv: Path) -> dict[str, Any]:
    """The impressions stage: every study of the official split table into the impressions
    table or the reject table; returns :func:`impression_summary`."""
    from chexdino.selection import mimic_studies

    impressions, rejects = extract_impressions(mimic_studies(Path(split_csv), Path(report_root)))
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    impressions.to_csv(out_csv, index=False)
    rejects.to_csv(rejects_csv, index=False)
    return impression_summary(impressions, rejects)
