"""`chexdino predict`: new films through the training-time preprocessing give the evaluate
stage's probabilities; unreadable files end in the rejects table."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from chexdino import LABELS
from chexdino.cli import main
from chexdino.config import PROMPT_KEYS, EvaluateConfig, ImagesConfig, PromptConfig, SelectConfig
from chexdino.errors import ChexdinoError
from chexdino.evaluate import evaluate_store
from chexdino.images import process_shard
from chexdino.model import build_model
from chexdino.model_files import Scoring
from chexdino.predict import collect_files, predict_settings
from chexdino.selection import select_mimic
from conftest import MAX_FRAME_PIXELS

EVAL = {"bootstrap": 0, "labels": ["Edema", "Pleural Effusion", "No Finding"],
        "positive_templates": ["{}", "signs of {}"], "negative_templates": ["no {}"]}


@pytest.fixture(scope="module")
def scored_demo(small_demo, tmp_path_factory):
    """The small demo's films through the images stage and the evaluate stage."""
    root, _ = small_demo
    tmp = tmp_path_factory.mktemp("predict")
    m = root / "mimic"
    manifest, _ = select_mimic(
        m / "mimic-cxr-2.0.0-split.csv.gz", m / "mimic-cxr-2.0.0-metadata.csv.gz",
        m / "mimic-cxr-2.0.0-chexpert.csv.gz", m, m, ".dcm", SelectConfig.from_section())
    process_shard(manifest, tmp / "cxr.h5", tmp / "image_rejects.csv",
                  ImagesConfig.from_section().size, max_frame_pixels=MAX_FRAME_PIXELS)
    torch.manual_seed(0)
    cfg = {"embed_dim": 32, "init_temperature": 0.07, "max_logit_scale": 100.0,
           "vision": {"name": "vit_base_patch16_dinov3", "weights": None, "random_init": True,
                      "overrides": {"embed_dim": 48, "depth": 2, "num_heads": 3,
                                    "init_values": 1.0}},
           "text": {"name": "ViT-B-32-quickgelu", "weights": None, "random_init": True,
                    "overrides": {"width": 32, "heads": 2, "layers": 1}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg)
    ckpt = tmp / "train" / "best.pt"
    ckpt.parent.mkdir()
    prompts = {k: v for k, v in {**PromptConfig.from_section().to_dict(), **EVAL}.items()
               if k in PROMPT_KEYS}
    torch.save({"step": 1, "model": model.state_dict(), "model_config": model.cfg.to_dict(),
                "val": {}, "input_size": 48, "precision": "fp32", "device": "cpu",
                "store_size": 320, "prompts": prompts}, ckpt)
    evaluate_store([ckpt], tmp / "cxr.h5", tmp / "eval",
                   EvaluateConfig.from_section({**EVAL, "batch_size": 16}),
                   Scoring(48, "fp32", "cpu"))
    return tmp, manifest, ckpt


def test_predict_equals_the_evaluate_stage(scored_demo, tmp_path):
    tmp, manifest, ckpt = scored_demo
    png = tmp_path / "film.png"
    first_jpg = manifest["image_path"].iloc[0].replace(".dcm", ".jpg")
    Image.open(first_jpg).save(png)
    films = [*manifest["image_path"], str(png), str(tmp_path / "missing.dcm")]
    out, rejects = tmp_path / "predictions.csv", tmp_path / "rejects.csv"
    # Input size, precision, stored size and prompts come from the checkpoint's own record.
    rc = main(["predict", "--model", str(ckpt), *films, "--out", str(out),
               "--rejects", str(rejects), "--labels", *EVAL["labels"], "--batch-size", "5"])
    assert rc == 0
    pred = pd.read_csv(out)
    rej = pd.read_csv(rejects)
    assert len(pred) + len(rej) == len(films)  # every input ends in one of the two tables
    assert set(rej["file"]) == {*pd.read_csv(tmp / "image_rejects.csv", dtype=str)
                                .merge(manifest[["dicom_id", "image_path"]])["image_path"],
                                str(tmp_path / "missing.dcm")}
    assert "file not found" in rej.set_index("file").loc[str(tmp_path / "missing.dcm"), "reason"]

    evaluated = pd.read_csv(tmp / "eval" / "probabilities.csv", dtype={"dicom_id": str})
    dicoms = pred[pred["file"].str.endswith(".dcm")].copy()
    dicoms["dicom_id"] = dicoms["file"].map(lambda p: p.rsplit("/", 1)[1][:-4])
    both = evaluated.merge(dicoms, on="dicom_id", suffixes=("_eval", "_pred"))
    assert len(both) == len(evaluated) > 10
    for label in EVAL["labels"]:
        np.testing.assert_allclose(both[f"prob_{label}_pred"], both[f"prob_{label}_eval"],
                                   rtol=0, atol=1e-5)
    spread = both[[f"prob_{x}_pred" for x in EVAL["labels"]]].to_numpy().std(axis=0)
    assert (spread > 1e-4).all()  # the films really get different probabilities
    assert pred.loc[pred["file"] == str(png), "source_rows"].item() > 100


def test_labels_can_be_overridden_and_folders_are_walked(scored_demo, tmp_path):
    _, manifest, ckpt = scored_demo
    folder = tmp_path / "films"
    folder.mkdir()
    for path in manifest["image_path"].iloc[:3]:
        shutil.copy(path, folder)
    (folder / "notes.txt").write_text("not a film")
    out, rejects = tmp_path / "p.csv", tmp_path / "r.csv"
    main(["predict", "--model", str(ckpt), str(folder),
          "--labels", "Cardiomegaly", "--out", str(out), "--rejects", str(rejects),
          "--device", "cpu"])
    pred = pd.read_csv(out)
    assert list(pred.filter(like="prob_").columns) == ["prob_Cardiomegaly"]
    assert len(pred) + len(pd.read_csv(rejects)) == 4
    assert "unsupported file type" in pd.read_csv(rejects)["reason"].str.cat()


def test_settings_come_from_the_checkpoint_and_the_command_line(scored_demo, tmp_path):
    """No run_config.yaml and no ``train:`` section: the model file is the one source."""
    _, _, ckpt = scored_demo
    settings = predict_settings(ckpt)
    assert (settings.input_size, settings.store_size, settings.precision) == (48, 320, "fp32")
    assert settings.prompts["positive_templates"] == EVAL["positive_templates"]
    assert settings.labels == list(LABELS)  # config.yaml's evaluate.labels
    assert settings.max_frame_pixels == ImagesConfig.from_section().max_frame_pixels
    chosen = predict_settings(ckpt, ["Edema"], "cpu", "bf16", 1000)
    assert (chosen.labels, chosen.precision, chosen.max_frame_pixels) == (
        ["Edema"], "bf16", 1000)
    with pytest.raises(ChexdinoError, match="not a chexdino checkpoint"):
        predict_settings(tmp_path / "elsewhere" / "best.pt")


def test_predict_applies_the_images_stage_frame_limit(scored_demo, tmp_path):
    """A film over ``max_frame_pixels`` is rejected unread, as in the images stage."""
    _, manifest, ckpt = scored_demo
    film = manifest["image_path"].iloc[0]
    out, rejects = tmp_path / "p.csv", tmp_path / "r.csv"
    main(["predict", "--model", str(ckpt), film, "--max-frame-pixels", "100",
          "--out", str(out), "--rejects", str(rejects)])
    assert pd.read_csv(out).empty
    reason = pd.read_csv(rejects).set_index("file").loc[film, "reason"]
    assert "100" in reason, reason
    files, rejects = collect_files([tmp_path / "nothing-here"])
    assert files == [] and rejects == [(str(tmp_path / "nothing-here"), "file not found")]
