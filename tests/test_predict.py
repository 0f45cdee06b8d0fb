"""`chexdino predict`: new films through the training-time preprocessing give the evaluate
stage's probabilities; unreadable files end in the rejects table."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from chexdino.cli import main
from chexdino.config import EvaluateConfig, ImagesConfig, SelectConfig
from chexdino.errors import ChexdinoError
from chexdino.evaluate import Scoring, evaluate_store
from chexdino.images import process_shard
from chexdino.model import build_model
from chexdino.predict import PredictSettings, collect_files, default_config, merge_configs
from chexdino.selection import select_mimic

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
                  ImagesConfig.from_section().size)
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
    torch.save({"step": 1, "model": model.state_dict(), "model_config": model.cfg.to_dict(),
                "val": {}}, ckpt)
    evaluate_store([ckpt], tmp / "cxr.h5", tmp / "eval",
                   EvaluateConfig.from_section({**EVAL, "batch_size": 16}),
                   Scoring(48, "fp32", "cpu"))
    run_config = {"images": {"size": 320}, "train": {"input_size": 48}, "evaluate": EVAL}
    (tmp / "run_config.yaml").write_text(yaml.safe_dump(run_config))
    return tmp, manifest, ckpt


def test_predict_equals_the_evaluate_stage(scored_demo, tmp_path):
    tmp, manifest, ckpt = scored_demo
    png = tmp_path / "film.png"
    first_jpg = manifest["image_path"].iloc[0].replace(".dcm", ".jpg")
    Image.open(first_jpg).save(png)
    films = [*manifest["image_path"], str(png), str(tmp_path / "missing.dcm")]
    out, rejects = tmp_path / "predictions.csv", tmp_path / "rejects.csv"
    # No --config: the run_config.yaml of the results folder holding train/best.pt is used.
    rc = main(["predict", "--model", str(ckpt), *films, "--out", str(out),
               "--rejects", str(rejects), "--device", "cpu", "--batch-size", "5"])
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
    tmp, manifest, ckpt = scored_demo
    folder = tmp_path / "films"
    folder.mkdir()
    for path in manifest["image_path"].iloc[:3]:
        shutil.copy(path, folder)
    (folder / "notes.txt").write_text("not a film")
    out, rejects = tmp_path / "p.csv", tmp_path / "r.csv"
    main(["predict", "--model", str(ckpt), str(folder), "--config", str(tmp / "run_config.yaml"),
          "--labels", "Cardiomegaly", "--out", str(out), "--rejects", str(rejects),
          "--device", "cpu"])
    pred = pd.read_csv(out)
    assert list(pred.filter(like="prob_").columns) == ["prob_Cardiomegaly"]
    assert len(pred) + len(pd.read_csv(rejects)) == 4
    assert "unsupported file type" in pd.read_csv(rejects)["reason"].str.cat()


def test_settings_come_from_the_merged_run_config(tmp_path):
    base, overlay = tmp_path / "config.yaml", tmp_path / "demo.yaml"
    base.write_text(yaml.safe_dump({"train": {"input_size": 224, "steps": 9},
                                    "evaluate": {"labels": ["Edema"], "uncertain": "exclude"}}))
    overlay.write_text(yaml.safe_dump({"train": {"input_size": 96}}))
    settings = PredictSettings.from_config(merge_configs([base, overlay]))
    assert (settings.input_size, settings.store_size, settings.labels) == (96, 320, ["Edema"])
    with pytest.raises(ChexdinoError, match="run_config.yaml"):
        default_config(tmp_path / "elsewhere" / "best.pt")
    files, rejects = collect_files([tmp_path / "nothing-here"])
    assert files == [] and rejects == [(str(tmp_path / "nothing-here"), "file not found")]
