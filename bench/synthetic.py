"""A learnable synthetic image/text store for GPU benchmarks (no pydicom needed there).

Each 320x320 film carries up to five "signs" (bright bars in fixed places) and its text names
them, so contrastive training has something to learn and validation AUROC moves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chexdino import COMPETITION_LABELS, LABELS, h5store
from chexdino.config import ReportsConfig
from chexdino.tokens import _write_tokens, tokenize

PHRASES = {
    "Atelectasis": "bibasilar atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "right upper lobe consolidation",
    "Edema": "pulmonary edema",
    "Pleural Effusion": "pleural effusion",
}


def make_store(out_dir: Path, n_train: int, n_val: int, size: int = 320,
               seed: int = 0) -> tuple[Path, Path]:
    """Write ``cxr.h5`` and ``tokens.h5`` with ``n_train`` train and ``n_val`` validate rows."""
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    signs = rng.random((n, len(COMPETITION_LABELS))) < 0.3
    low = rng.integers(20, 90, size=(n, size // 8, size // 8), dtype=np.uint8)
    images = np.repeat(np.repeat(low, 8, axis=1), 8, axis=2)
    band = size // 8
    for j in range(len(COMPETITION_LABELS)):
        rows = np.flatnonzero(signs[:, j])
        images[rows, band * (j + 1):band * (j + 1) + band // 2, size // 8:size - size // 8] = 220
    texts = []
    for row in signs:
        found = [PHRASES[lab] for lab, s in zip(COMPETITION_LABELS, row, strict=True) if s]
        texts.append(", ".join(found) + "." if found else "no acute cardiopulmonary process.")
    meta = pd.DataFrame({
        "dicom_id": [f"d{i:07d}" for i in range(n)], "study_id": [f"s{i:07d}" for i in range(n)],
        "subject_id": [f"p{i:07d}" for i in range(n)],
        "split": ["train"] * n_train + ["validate"] * n_val, "view": "PA",
        "source_rows": size, "source_cols": size,
    })
    for lab in LABELS:
        meta[lab] = signs[:, COMPETITION_LABELS.index(lab)].astype(float) if (
            lab in COMPETITION_LABELS) else np.nan
    out_dir.mkdir(parents=True, exist_ok=True)
    cxr, tokens = out_dir / "cxr.h5", out_dir / "tokens.h5"
    h5store.write_store(cxr, images, meta, size)
    context_length = ReportsConfig.from_section().context_length
    _write_tokens(tokens, tokenize(texts, context_length).numpy().astype(np.int32),
                  np.ones(n, dtype=bool), meta["dicom_id"], pd.Series(["impression"] * n))
    return cxr, tokens
