"""CLIP BPE tokens for impressions, stored row-aligned with the image store."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from chexdino import h5store
from chexdino.atomic import atomic_output
from chexdino.config import ReportsConfig


@lru_cache(maxsize=4)
def get_tokenizer(context_length: int, name: str = "ViT-B-32-quickgelu"):
    """open_clip's CLIP tokenizer (ships its BPE vocabulary); built once per process."""
    import open_clip

    return open_clip.get_tokenizer(name, context_length=context_length)


def tokenize(texts: Sequence[str], context_length: int) -> torch.Tensor:
    """(N, context_length) int64 tokens; long texts are truncated, ending in the EOT token."""
    return get_tokenizer(context_length=context_length)(list(texts))


def build_tokens(
    cxr_h5: Path, impressions_csv: Path, out_h5: Path, cfg: ReportsConfig,
    environment: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Tokenise each image row's study impression; rows without text get ``has_text`` False.

    One report serves all images of its study, so each impression is tokenised once and
    broadcast to its image rows. ``environment`` (this job's record) becomes the file's
    ``environment`` attribute, for the provenance table.
    """
    context_length = cfg.context_length
    meta = h5store.read_meta(cxr_h5)
    impressions = pd.read_csv(impressions_csv, dtype={"study_id": str}, keep_default_na=False)
    impressions = impressions.drop_duplicates("study_id").set_index("study_id")
    unique = tokenize(impressions["impression"].tolist(), context_length).to(torch.int32)
    position = pd.Series(np.arange(len(impressions)), index=impressions.index)
    row_pos = meta["study_id"].map(position)
    has_text = row_pos.notna().to_numpy()
    tokens = np.zeros((len(meta), context_length), dtype=np.int32)
    if has_text.any():
        tokens[has_text] = unique.numpy()[row_pos[has_text].astype(int).to_numpy()]
    source = meta["study_id"].map(impressions["impression_source"]).fillna("rejected")
    _write_tokens(out_h5, tokens, has_text, meta["dicom_id"], source, environment)
    return {"rows": len(meta), "with_text": int(has_text.sum()),
            "without_text": int((~has_text).sum())}


def _write_tokens(
    out_h5: Path, tokens: np.ndarray, has_text: np.ndarray, dicom_id: pd.Series,
    source: pd.Series, environment: dict[str, Any] | None = None,
) -> None:
    strings = h5py.string_dtype()
    with atomic_output(out_h5) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("tokens", data=tokens)
        f.create_dataset("has_text", data=has_text)
        f.create_dataset("dicom_id", data=dicom_id.astype(str).to_numpy(dtype=object),
                         dtype=strings)
        f.create_dataset("impression_source", data=source.astype(str).to_numpy(dtype=object),
                         dtype=strings)
        f.attrs["context_length"] = tokens.shape[1]
        if environment is not None:
            f.attrs["environment"] = json.dumps(environment)


def read_tokens(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32 (N, L), has_text bool (N,)) in image-store row order."""
    with h5py.File(path, "r") as f:
        return f["tokens"][()], f["has_text"][()].astype(bool)
