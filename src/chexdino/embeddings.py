"""Frozen image embeddings of one evaluation split, cached as a file (``.npz``) so that the
linear probe's settings (fractions, seeds, regulariser grid) never re-embed the films.

The file holds ``embeddings`` (N, D) float32 unit vectors of the model's image tower,
row-aligned ``dicom_id`` and ``subject_id``, the raw CheXpert ``labels`` (N, 14; 1 / 0 / -1 /
NaN) and ``label_names``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from chexdino import LABELS, h5store
from chexdino.device import pick_device
from chexdino.inference import embed_images, model_normalization
from chexdino.model_files import load_checkpoint_model, read_scoring

log = logging.getLogger(__name__)


def embed_split(model_path: Path, cxr_h5: Path, out_npz: Path, split: str | None,
                batch_size: int) -> int:
    """Embed a store's rows of ``split`` (every row when None) with a chexdino checkpoint at
    the input size, precision and device training recorded; write ``out_npz``."""
    scoring = read_scoring(Path(model_path))
    device = pick_device(scoring.device)
    meta = h5store.read_meta(cxr_h5)
    rows = np.flatnonzero(meta["split"] == split) if split else np.arange(len(meta))
    model = load_checkpoint_model(Path(model_path), device)
    images = h5store.load_cxr_array(cxr_h5, rows)
    emb = embed_images(model, images, scoring.input_size, device, batch_size,
                       scoring.precision, model_normalization(model))
    labels = meta.loc[rows, list(LABELS)].to_numpy(dtype=np.float32)
    out_npz = Path(out_npz)
    out_npz.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_npz.with_name(out_npz.name + ".tmp.npz")
    np.savez(tmp, embeddings=emb.cpu().numpy().astype(np.float32),
             dicom_id=meta.loc[rows, "dicom_id"].to_numpy(dtype=str),
             subject_id=meta.loc[rows, "subject_id"].to_numpy(dtype=str),
             labels=labels, label_names=np.array(LABELS, dtype=str))
    tmp.replace(out_npz)
    log.info("embedded %d images of %s (split %s) -> %s", len(rows), cxr_h5, split or "all",
             out_npz)
    return len(rows)


def read_embeddings(path: Path) -> dict[str, np.ndarray]:
    """The arrays :func:`embed_split` wrote."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
