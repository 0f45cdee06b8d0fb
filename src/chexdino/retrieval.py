"""Image-report retrieval on MIMIC-CXR's test split: Recall@K both ways, study level, with CIs.

The unit is the study, as chest X-ray retrieval papers report it: a study's image embedding is
the re-normalised mean of its frontal films' embeddings, and its report is its impression (the
tokens the model trained on). A report text shared verbatim by several studies ("No acute
cardiopulmonary process.") is one candidate, and any study with that text is a correct answer;
counting the copies as distinct wrong answers would punish the model for the dataset's
repetitiveness. A query's rank is the number of wrong candidates scoring strictly higher than
its best correct one; Recall@K is the share of queries with rank < K. CIs resample queries
(bootstrap, the evaluation's seed). Similarities are computed in query blocks on the device.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from chexdino import h5store, metrics
from chexdino.config import EvaluateConfig
from chexdino.device import pick_device
from chexdino.inference import embed_images, embed_tokens
from chexdino.model_files import load_checkpoint_model, read_scoring
from chexdino.provenance import environment
from chexdino.tokens import read_tokens

log = logging.getLogger(__name__)

KS: tuple[int, ...] = (1, 5, 10)
DIRECTIONS: tuple[str, ...] = ("image_to_report", "report_to_image")
TABLE_COLUMNS: tuple[str, ...] = ("direction", "k", "recall", "ci_low", "ci_high", "n_queries",
                                  "n_candidates")


def retrieval_ranks(
    query: torch.Tensor, gallery: torch.Tensor, query_group: torch.Tensor,
    gallery_group: torch.Tensor, block: int = 1024,
) -> torch.Tensor:
    """(Q,) number of gallery items outside the query's group that score strictly above the
    best item inside it (0 = a correct item is first). Cosine scores; blocks of queries."""
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query dim {query.shape[1]} != gallery dim {gallery.shape[1]}")
    device = gallery.device
    gallery = torch.nn.functional.normalize(gallery.float(), dim=-1)
    gallery_group = gallery_group.to(device)
    ranks = []
    for start in range(0, len(query), block):
        q = torch.nn.functional.normalize(query[start:start + block].to(device).float(), dim=-1)
        scores = q @ gallery.T
        relevant = query_group[start:start + block].to(device)[:, None] == gallery_group[None]
        if not relevant.any(dim=1).all():
            raise ValueError("a query has no correct item in the gallery")
        best = scores.masked_fill(~relevant, -torch.inf).amax(dim=1, keepdim=True)
        ranks.append(((scores > best) & ~relevant).sum(dim=1))
    return torch.cat(ranks).cpu() if ranks else torch.zeros(0, dtype=torch.long)


def recall_table(
    ranks: dict[str, np.ndarray], n_candidates: dict[str, int], n_bootstrap: int, seed: int,
    ks: Sequence[int] = KS, ci: float = 0.95,
) -> pd.DataFrame:
    """Recall@K per direction with a percentile bootstrap CI over the queries."""
    records = []
    for direction, rank in ranks.items():
        rank = np.asarray(rank)
        idx = metrics.bootstrap_indices(len(rank), n_bootstrap, seed) if len(rank) else None
        for k in ks:
            hits = (rank < k).astype(np.float64)
            lo = hi = np.nan
            if idx is not None and len(idx):
                q = (1 - ci) / 2
                lo, hi = np.quantile(hits[idx].mean(axis=1), [q, 1 - q])
            records.append({"direction": direction, "k": int(k),
                            "recall": float(hits.mean()) if len(hits) else np.nan,
                            "ci_low": float(lo), "ci_high": float(hi), "n_queries": len(rank),
                            "n_candidates": int(n_candidates[direction])})
    return pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS))


def study_level(
    image_emb: torch.Tensor, study_ids: np.ndarray, tokens: np.ndarray,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Per study: mean image embedding (re-normalised), and the index of its report text
    among the distinct texts; also the rows of ``tokens`` holding each distinct text."""
    studies, first, inverse = np.unique(study_ids, return_index=True, return_inverse=True)
    order = np.argsort(first)  # studies in store order
    rank_of = np.empty_like(order)
    rank_of[order] = np.arange(len(order))
    member = torch.from_numpy(rank_of[inverse]).to(image_emb.device)
    sums = torch.zeros(len(studies), image_emb.shape[1], device=image_emb.device)
    sums.index_add_(0, member, torch.nn.functional.normalize(image_emb.float(), dim=-1))
    study_emb = torch.nn.functional.normalize(sums, dim=-1)
    study_rows = first[order]
    _, text_first, text_of_study = np.unique(tokens[study_rows], axis=0, return_index=True,
                                                 return_inverse=True)
    return study_emb, np.asarray(text_of_study).reshape(-1), study_rows[text_first]


def score_retrieval(
    model_path: Path, cxr_h5: Path, tokens_h5: Path, out_dir: Path, cfg: EvaluateConfig,
    split: str = "test", ks: Sequence[int] = KS,
) -> pd.DataFrame:
    """Embed the split's films and reports, rank both ways, write retrieval.csv and .json.

    Uses ``cfg``'s batch size, bootstrap and seed; the input size, precision and device are
    the checkpoint's (as at evaluation).
    """
    scoring = read_scoring(Path(model_path))
    input_size, precision = scoring.input_size, scoring.precision
    batch_size, n_bootstrap, seed = cfg.batch_size, cfg.bootstrap, cfg.seed
    device = pick_device(scoring.device)
    meta = h5store.read_meta(cxr_h5)
    tokens, has_text = read_tokens(tokens_h5)
    in_split = (meta["split"] == split).to_numpy()
    rows = np.flatnonzero(in_split & has_text)
    no_text = meta.loc[in_split & ~has_text, "study_id"].nunique()
    model = load_checkpoint_model(Path(model_path), device)
    images = h5store.load_cxr_array(cxr_h5, rows)
    image_emb = embed_images(model, images, input_size, device, batch_size, precision)
    study_emb, text_of_study, text_rows = study_level(
        image_emb, meta["study_id"].to_numpy()[rows].astype(str), tokens[rows])
    text_emb = embed_tokens(model, tokens[rows][text_rows], device, precision, batch_size)
    text_group = torch.arange(len(text_rows))
    study_group = torch.from_numpy(text_of_study)
    ranks = {
        "image_to_report": retrieval_ranks(study_emb, text_emb, study_group, text_group),
        "report_to_image": retrieval_ranks(text_emb, study_emb, text_group, study_group),
    }
    table = recall_table({k: v.numpy() for k, v in ranks.items()},
                         {"image_to_report": len(text_rows), "report_to_image": len(study_emb)},
                         n_bootstrap=n_bootstrap, seed=seed, ks=ks)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "retrieval.csv", index=False)
    summary = {"split": split, "n_images": len(rows), "n_studies": len(study_emb),
               "n_distinct_reports": len(text_rows), "n_studies_without_report": int(no_text),
               "n_bootstrap": int(n_bootstrap), "seed": int(seed),
               "recall": {f"{r.direction}@{r.k}": [_finite(r.recall), _finite(r.ci_low),
                                                    _finite(r.ci_high)]
                          for r in table.itertuples()},
               "model": str(model_path), "environment": environment(device)}
    (out_dir / "retrieval.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
    log.info("retrieval on %d studies (%d images, %d distinct reports; %d studies without a "
             "report left out)", len(study_emb), len(rows), len(text_rows), no_text)
    print(format_recall(table))
    return table


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def format_recall(table: pd.DataFrame) -> str:
    """Plain-text Recall@K table for logs and the terminal."""
    lines = [f"{'direction':<16} {'K':>3}  recall  95% CI"]
    for r in table.itertuples():
        lines.append(f"{r.direction:<16} {r.k:>3}  {r.recall:.3f}   "
                     f"[{r.ci_low:.3f}, {r.ci_high:.3f}]  ({r.n_queries} queries, "
                     f"{r.n_candidates} candidates)")
    return "\n".join(lines)
