"""The columns of every table the workflow writes, defined once.

The stages that write a table and those that read it back share these names, so a column
cannot be added in one place and forgotten in another. Ids are strings everywhere.
"""

from __future__ import annotations

from chexdino import LABELS

ID_COLUMNS: tuple[str, ...] = ("dicom_id", "study_id", "subject_id", "split", "view")
"""The ids of one film, in the manifest, the reject tables and the image store."""

MANIFEST_COLUMNS: tuple[str, ...] = (*ID_COLUMNS, "image_path", "report_path", *LABELS)
"""``manifest.csv``: one row per selected film, with its files and its 14 labels."""

SELECT_REJECT_COLUMNS: tuple[str, ...] = (*ID_COLUMNS, "reason")
"""``select_rejects.csv``: films the selection left out (view, split, ``max_images``)."""

IMAGE_REJECT_COLUMNS: tuple[str, ...] = (
    "dicom_id", "study_id", "subject_id", "split", "image_path", "reason",
)
"""``image_rejects.csv``: selected films whose image could not be read."""

IMPRESSION_COLUMNS: tuple[str, ...] = ("study_id", "impression", "impression_source")
"""``impressions.csv``: one row per study with a usable impression."""

REPORT_REJECT_COLUMNS: tuple[str, ...] = ("study_id", "report_path", "reason")
"""``report_rejects.csv``: studies whose report gave no usable text."""

REJECT_COLUMNS: tuple[str, ...] = ("dicom_id", "study_id", "subject_id", "split", "stage",
                                   "reason")
"""``rejects.csv``: every film not used for training, with the ``stage`` that dropped it."""

PREDICTION_REJECT_COLUMNS: tuple[str, ...] = ("file", "reason")
"""The rejects table of ``chexdino predict``: files that could not be scored."""
