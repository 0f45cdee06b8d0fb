"""The evaluate stage's glue: checkpoints in, scorecard files out; ensembles average."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from chexdino import LABELS, h5store
from chexdino.config import EvaluateConfig, PromptConfig
from chexdino.evaluate import evaluate_store
from chexdino.model import build_model
from chexdino.model_files import Scoring


@pytest.fixture
def store_and_checkpoints(tmp_path, tiny_model_cfg):
    rng = np.random.default_rng(0)
    n = 40
    meta = pd.DataFrame({"dicom_id": [f"d{i}" for i in range(n)],
                         "study_id": [f"s{i}" for i in range(n)], "subject_id": "p1",
                         "split": ["test"] * 30 + ["train"] * 10, "view": "PA",
                         "source_rows": 64, "source_cols": 64})
    for lab in LABELS:
        meta[lab] = rng.choice([1.0, 0.0, -1.0, np.nan], size=n)
    cxr = tmp_path / "cxr.h5"
    h5store.write_store(cxr, rng.integers(0, 255, (n, 64, 64), dtype=np.uint8), meta, 64)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(tiny_model_cfg)
        path = tmp_path / f"ckpt{seed}.pt"
        torch.save({"step": 1, "model": model.state_dict(),
                    "model_config": model.cfg.to_dict(), "val": {}}, path)
        paths.append(path)
    return cxr, paths, meta


def run(cxr, ckpts, out, **cfg):
    section = EvaluateConfig.from_section({"bootstrap": 50, "batch_size": 16, **cfg})
    return evaluate_store(ckpts, cxr, out, section, Scoring(32, "fp32", "cpu"), split="test")


def read_probs(out):
    return pd.read_csv(out / "probabilities.csv").filter(like="prob_").to_numpy()


def test_ensemble_of_identical_checkpoints_equals_single(store_and_checkpoints, tmp_path):
    cxr, (a, b), _ = store_and_checkpoints
    run(cxr, [a], tmp_path / "single")
    run(cxr, [a, a], tmp_path / "double")
    run(cxr, [a, b], tmp_path / "mixed")
    single, double = read_probs(tmp_path / "single"), read_probs(tmp_path / "double")
    np.testing.assert_allclose(single, double, rtol=0, atol=1e-12)
    mixed = read_probs(tmp_path / "mixed")
    run(cxr, [b], tmp_path / "other")
    np.testing.assert_allclose(mixed, (single + read_probs(tmp_path / "other")) / 2, atol=1e-9)


def test_scorecard_uses_the_split_and_the_uncertain_policy(store_and_checkpoints, tmp_path):
    cxr, (a, _), meta = store_and_checkpoints
    summary = run(cxr, [a], tmp_path / "ex")
    assert summary["n_images"] == 30
    ids = pd.read_csv(tmp_path / "ex" / "probabilities.csv", dtype=str)["dicom_id"]
    assert list(ids) == [f"d{i}" for i in range(30)]
    table = pd.read_csv(tmp_path / "ex" / "auroc.csv").set_index("label")
    test = meta.iloc[:30]
    for lab in ("Edema", "No Finding"):
        assert table.loc[lab, "n_pos"] == (test[lab] == 1).sum()
        assert table.loc[lab, "n_neg"] == ((test[lab] == 0) | test[lab].isna()).sum()
    run(cxr, [a], tmp_path / "pos", uncertain="positive")
    pos = pd.read_csv(tmp_path / "pos" / "auroc.csv").set_index("label")
    assert pos.loc["Edema", "n_pos"] == test["Edema"].isin([1.0, -1.0]).sum()
    written = json.loads((tmp_path / "ex" / "summary.json").read_text())
    assert written["n_images"] == 30 and "mean_auroc_competition" in written["headline"]


def test_ensemble_members_are_the_top_k_by_validation_metric(tmp_path):
    from chexdino.model_files import ensemble_members

    info = {"select_by": "val_auroc", "best": "b.pt",
            "ranked": [{"path": "s3.pt", "step": 3, "metric": 0.9},
                       {"path": "s1.pt", "step": 1, "metric": 0.8},
                       {"path": "s2.pt", "step": 2, "metric": 0.7}]}
    path = tmp_path / "checkpoints.json"
    path.write_text(json.dumps(info))
    assert [p.name for p in ensemble_members(path, 2)] == ["s3.pt", "s1.pt"]
    info["ranked"] = []
    path.write_text(json.dumps(info))
    assert [p.name for p in ensemble_members(path, 2)] == ["b.pt"]


def test_evaluation_uses_the_normalisation_recorded_in_the_checkpoint(store_and_checkpoints,
                                                                      tmp_path):
    from chexdino.inference import embed_images, model_normalization, zero_shot_probs
    from chexdino.model_files import load_checkpoint_model

    cxr, (a, _), _ = store_and_checkpoints
    ckpt = torch.load(a, weights_only=True)
    imagenet = tmp_path / "imagenet.pt"
    torch.save({**ckpt, "normalize": "imagenet"}, imagenet)
    run(cxr, [a], tmp_path / "clip")  # no record: written before the setting, i.e. clip
    run(cxr, [imagenet], tmp_path / "imagenet")
    model = load_checkpoint_model(imagenet, torch.device("cpu"))
    normalize = model_normalization(model)
    assert normalize == "imagenet" and model_normalization(
        load_checkpoint_model(a, torch.device("cpu"))) == "clip"
    rows = np.arange(30)  # the test split
    emb = embed_images(model, h5store.load_cxr_array(cxr, rows), 32, torch.device("cpu"), 16,
                       "fp32", "imagenet")
    expected = zero_shot_probs(model, emb, list(LABELS), PromptConfig.from_section(),
                               torch.device("cpu"), "fp32")
    np.testing.assert_allclose(read_probs(tmp_path / "imagenet"), expected, atol=1e-6)
    assert np.abs(read_probs(tmp_path / "imagenet") - read_probs(tmp_path / "clip")).max() > 1e-4


def test_evaluate_model_scores_at_the_input_size_the_checkpoint_records(store_and_checkpoints,
                                                                        tmp_path, caplog):
    """The evaluate stage reads input size, precision and device from the checkpoint, not
    from the train: section; an older checkpoint without them gets config.yaml's train
    values, and the log says so."""
    from chexdino.evaluate import evaluate_model
    from chexdino.model_files import read_scoring

    cxr, (a, _), _ = store_and_checkpoints
    ckpt = torch.load(a, weights_only=True)
    cfg = EvaluateConfig.from_section({"bootstrap": 5, "batch_size": 16})
    for size in (32, 48):
        path = tmp_path / f"at{size}.pt"
        torch.save({**ckpt, "input_size": size, "precision": "fp32", "device": "cpu"}, path)
        evaluate_model(path, cxr, tmp_path / f"model{size}", cfg, split="test")
        evaluate_store([path], cxr, tmp_path / f"store{size}", cfg, Scoring(size, "fp32", "cpu"),
                       split="test")
        np.testing.assert_allclose(read_probs(tmp_path / f"model{size}"),
                                   read_probs(tmp_path / f"store{size}"), atol=1e-9)
    assert np.abs(read_probs(tmp_path / "model32") - read_probs(tmp_path / "model48")).max() > 1e-4

    with caplog.at_level("WARNING"):
        assert read_scoring(a) == Scoring(224, "bf16", "auto")  # config.yaml's train section
    assert f"{a} records no input_size/precision/device" in caplog.text
    assert "train.input_size = 224" in caplog.text


def test_evaluate_model_refuses_what_it_cannot_score(store_and_checkpoints, tmp_path):
    from chexdino.errors import ChexdinoError
    from chexdino.evaluate import evaluate_model

    cxr, (a, _), _ = store_and_checkpoints
    cfg = EvaluateConfig.from_section({"ensemble_top_k": 2})
    with pytest.raises(ChexdinoError, match="ensemble_top_k > 1 needs --checkpoints"):
        evaluate_model(a, cxr, tmp_path / "out", cfg)
    with pytest.raises(ChexdinoError, match="file not found"):
        evaluate_model(tmp_path / "missing.pt", cxr, tmp_path / "out", cfg)
    with pytest.raises(ChexdinoError, match="not an open_clip model folder"):
        evaluate_model(tmp_path, cxr, tmp_path / "out", cfg)


def test_scorecard_text_prints_every_evaluation_set_of_a_results_folder(store_and_checkpoints,
                                                                       tmp_path):
    from chexdino.errors import ChexdinoError
    from chexdino.scorecard_text import scorecard_text

    cxr, (a, _), _ = store_and_checkpoints
    with pytest.raises(ChexdinoError, match="no eval/\\*/summary.json under"):
        scorecard_text(tmp_path)
    run(cxr, [a], tmp_path / "eval" / "mimic_test", bootstrap=0)
    text = scorecard_text(tmp_path)
    assert "== zero-shot scorecard: mimic_test ==" in text and "Edema" in text
    assert "retrieval" not in text


def test_evaluate_compile_auto_compiles_only_large_sets_on_a_gpu():
    """The shipped ``evaluate.compile: auto`` compiles the image tower where it repays its
    ~40 s: on a GPU, for sets of 350,000 images or more; never on a CPU."""
    import torch

    from chexdino.config import EvaluateConfig

    cfg = EvaluateConfig.from_section({})
    assert cfg.compile == "auto"
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert not cfg.compiles(cuda, 5_000) and cfg.compiles(cuda, 377_110)
    assert not cfg.compiles(cpu, 377_110)
    assert EvaluateConfig.from_section({"compile": True}).compiles(cpu, 10)
    assert not EvaluateConfig.from_section({"compile": False}).compiles(cuda, 10**6)
