"""CLIP BPE tokens (open_clip's tokenizer, offline) row-aligned with the image store."""

from __future__ import annotations

import numpy as np
import pandas as pd

from chexdino import LABELS, h5store
from chexdino.config import ReportsConfig
from chexdino.tokens import build_tokens, read_tokens, tokenize
from conftest import CONTEXT_LENGTH

SOT, EOT = 49406, 49407


def test_tokenize_truncates_to_context_with_eot():
    tokens = tokenize(["No pleural effusion.", "word " * 200], context_length=CONTEXT_LENGTH)
    assert tokens.shape == (2, 77)
    assert tokens[0, 0] == SOT and EOT in tokens[0].tolist()
    assert tokens[1, -1] == EOT and (tokens[1] != 0).all()  # truncated, still ends with EOT
    assert (tokens[0, tokens[0].tolist().index(EOT) + 1:] == 0).all()


def test_tokens_follow_image_rows_and_studies(tmp_path):
    meta = pd.DataFrame({
        "dicom_id": ["a", "b", "c", "d"], "study_id": ["1", "2", "1", "3"],
        "subject_id": "9", "split": "train", "view": "PA", "source_rows": 10, "source_cols": 10,
    })
    for lab in LABELS:
        meta[lab] = np.nan
    cxr = tmp_path / "cxr.h5"
    h5store.write_store(cxr, np.zeros((4, 8, 8), np.uint8), meta, 8)
    impressions = tmp_path / "impressions.csv"
    pd.DataFrame({"study_id": ["2", "1"], "impression": ["Cardiomegaly.", "No effusion."],
                  "impression_source": ["impression", "findings"]}).to_csv(impressions,
                                                                            index=False)
    counts = build_tokens(cxr, impressions, tmp_path / "tokens.h5",
                          ReportsConfig.from_section())
    tokens, has_text = read_tokens(tmp_path / "tokens.h5")
    assert counts == {"rows": 4, "with_text": 3, "without_text": 1}
    assert has_text.tolist() == [True, True, True, False]
    expected = tokenize(["No effusion.", "Cardiomegaly.", "No effusion."],
                        context_length=CONTEXT_LENGTH).numpy()
    assert np.array_equal(tokens[:3], expected)
    assert not tokens[3].any()
