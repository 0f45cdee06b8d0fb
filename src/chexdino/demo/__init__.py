"""Seeded synthetic MIMIC-CXR (and a CheXpert-test-shaped eval set) in the real files' shapes.

Why: the same pipeline code must run on a laptop without credentialed data, and the demo's
zero-shot scorecard must be able to move. So the generator writes the real layout (DICOM + JPG
twins, reports, the three official CSVs), a deliberate variety of DICOM encodings and a few
broken records, and draws chest-like films whose five competition labels have clearly visible,
learnable signs that agree with the report text.

Everything is a pure function of ``seed``: no timestamps, UIDs derived from the seed, fixed
dates, gzip headers without mtime, so a rerun is byte-identical.

One module per thing it makes: :mod:`.phantom` (the films), :mod:`.findings` (label states
shared by film and text), :mod:`.prose` (the reports), :mod:`.dicom_files` (DICOM encodings),
:mod:`.dataset` (planning studies and writing the tree and its CSVs), :mod:`.draws` (seeded
draws they share). The product package never imports this subpackage; only ``chexdino
demo-data``, the tests and the benchmarks do.
"""

from chexdino.demo.dataset import make_demo_dataset
from chexdino.demo.phantom import StudySigns, render_frontal, render_lateral

__all__ = ["StudySigns", "make_demo_dataset", "render_frontal", "render_lateral"]
