"""`chexdino export`: open_clip rebuilds the exported folder offline with chexdino's embeddings."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from chexdino.errors import WeightsError
from chexdino.export import export_model
from chexdino.model import build_model
from chexdino.model_files import load_exported
from chexdino.modelcard import model_card
from chexdino.tokens import tokenize
from chexdino.transforms import eval_transform
from conftest import CONTEXT_LENGTH, MAX_FRAME_PIXELS, NORMALIZE, SEED

SETTINGS = {"store_size": 320, "input_size": 64, "labels": ["Edema"], "precision": "fp32",
            "evaluate": {"positive_templates": ["{}"], "negative_templates": ["no {}"]}}
TEXTS = ["no acute cardiopulmonary process", "moderate left pleural effusion", "edema"]


def _checkpoint(tmp_path, vision: dict):
    cfg = {"embed_dim": 32, "init_temperature": 0.05,
           "vision": {"weights": None, "random_init": True, **vision},
           "text": {"name": "ViT-B-32-quickgelu", "weights": None, "random_init": True,
                    "overrides": {"width": 32, "heads": 2, "layers": 1}}}
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg).eval()
    with torch.no_grad():  # no parameter keeps its initial value (biases start at zero)
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = tmp_path / "best.pt"
    torch.save({"step": 7, "model": model.state_dict(), "model_config": model.cfg.to_dict(),
                "val": {}, "input_size": 64, "precision": "fp32", "device": "cpu"}, path)
    return model, path


def _inputs():
    films = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (3, 320, 320),
                                                               dtype=np.uint8))
    images = eval_transform(films, SETTINGS["input_size"], normalize=NORMALIZE)
    return images, tokenize(TEXTS, context_length=CONTEXT_LENGTH)


@pytest.mark.slow  # 10 s on a 2-core machine
def test_open_clip_loads_the_folder_with_the_same_embeddings(tmp_path):
    import open_clip

    model, ckpt = _checkpoint(tmp_path, {"name": "vit_small_patch16_dinov3"})
    folder = tmp_path / "export"
    export_model(ckpt, folder, SETTINGS, card="# card\n")
    assert not list(folder.glob("*.pt")) and not list(folder.glob("*.bin"))  # no pickle
    loaded, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    loaded.eval()
    images, tokens = _inputs()
    oc_tokens = open_clip.get_tokenizer(f"local-dir:{folder}")(TEXTS)
    assert torch.equal(oc_tokens, tokens)
    with torch.no_grad():
        ours_img, ours_txt = model.encode_image(images), model.encode_text(tokens)
        theirs_img = loaded.encode_image(images, normalize=True)
        theirs_txt = loaded.encode_text(oc_tokens, normalize=True)
    assert (ours_img - theirs_img).abs().max() < 1e-5
    assert (ours_txt - theirs_txt).abs().max() < 1e-5
    assert (ours_img[0] - ours_img[1]).abs().max() > 1e-3  # distinct inputs, distinct outputs
    assert torch.allclose(loaded.logit_scale, model.logit_scale)
    # open_clip's transform letterboxes a portrait film to the input size on black.
    from PIL import Image

    x = preprocess(Image.fromarray(np.full((300, 150), 200, dtype=np.uint8), mode="L"))
    assert x.shape == (3, 64, 64)
    black = eval_transform(torch.zeros(1, 4, 4, dtype=torch.uint8), 4,
                           normalize=NORMALIZE)[0, :, 0, 0]
    torch.testing.assert_close(x[:, 0, 0], black)  # padded column
    assert (x[:, 32, 32] > black + 1).all()  # the film itself
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    assert cfg["preprocess_cfg"]["size"] == 64 and cfg["preprocess_cfg"]["resize_mode"] == "longest"
    assert cfg["chexdino"]["preprocessing"]["store_size"] == 320


def test_shrunken_towers_round_trip_in_chexdino_and_open_clip_3_3_refuses_them(tmp_path):
    import open_clip

    vision = {"name": "vit_base_patch16_dinov3",
              "overrides": {"embed_dim": 48, "depth": 2, "num_heads": 3, "init_values": 1.0}}
    model, ckpt = _checkpoint(tmp_path, vision)
    folder = tmp_path / "export"
    export_model(ckpt, folder, SETTINGS)
    again = load_exported(folder, device="cpu")
    images, tokens = _inputs()
    with torch.no_grad():
        assert torch.equal(again.encode_image(images), model.encode_image(images))
        assert torch.equal(again.encode_text(tokens), model.encode_text(tokens))
    doc = json.loads((folder / "open_clip_config.json").read_text())
    doc["chexdino"]["model_config"]["embed_dim"] = 16
    (folder / "open_clip_config.json").write_text(json.dumps(doc))
    with pytest.raises(WeightsError, match="model.safetensors"):
        load_exported(folder, device="cpu")
    if "timm_model_kwargs" not in open_clip.model.CLIPVisionCfg.__dataclass_fields__:
        with pytest.raises(Exception, match="timm_model_kwargs"):
            open_clip.create_model_and_transforms(f"local-dir:{folder}")


def test_model_card_carries_the_scorecard_and_the_limits():
    import pandas as pd

    table = pd.DataFrame({"label": ["Edema"], "auroc": [0.81234], "ci_low": [0.7],
                          "ci_high": [0.9], "n_pos": [12], "n_neg": [30], "note": [""]})
    headline = {"mean_auroc_competition": 0.8, "mean_auroc_competition_ci": [0.75, 0.85],
                "n_images": 42}
    config = {"model": {"vision": {"name": "vit_base_patch16_dinov3", "random_init": True},
                        "text": {"name": "ViT-B-32-quickgelu"}, "embed_dim": 512},
              "train": {"steps": 500}, "select": {"views": ["PA", "AP"]}}
    card = model_card(config, {"best_step": 400, "environment": {"hardware": "CPU: x"}},
                      {"input_records": 10, "kept": 9, "rejected": 1},
                      {"mimic_test": (table, headline)}, {"Retrieval": "R@1 table"})
    assert "| Edema | 0.812 | [0.700, 0.900] | 12 | 30 |" in card
    assert "**0.800** [0.750, 0.850]" in card and "## Retrieval" in card
    assert "random initialisation" in card and "not a medical device" in card


def test_export_of_a_finished_run_and_predict_through_the_folder(tmp_path, tiny_model_cfg):
    import pandas as pd
    from docutils.core import publish_doctree
    from PIL import Image

    from chexdino import LABELS, h5store
    from chexdino.cli import main
    from chexdino.config import EvaluateConfig
    from chexdino.evaluate import evaluate_store
    from chexdino.model_files import Scoring

    results = tmp_path / "results"
    rng = np.random.default_rng(1)
    n = 24
    meta = pd.DataFrame({"dicom_id": [f"d{i}" for i in range(n)], "study_id": "s",
                         "subject_id": "p", "split": "test", "view": "PA",
                         "source_rows": 64, "source_cols": 64})
    for lab in LABELS:
        meta[lab] = rng.choice([1.0, 0.0], size=n)
    images = rng.integers(0, 255, (n, 64, 64), dtype=np.uint8)
    h5store.write_store(tmp_path / "cxr.h5", images, meta, 64)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(tiny_model_cfg)
    ckpt = results / "train" / "best.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"step": 3, "model": model.state_dict(), "model_config": model.cfg.to_dict(),
                "val": {}, "input_size": 32, "precision": "fp32", "device": "cpu",
                "store_size": 64, "train_config": {"input_size": 32, "steps": 3}}, ckpt)
    eval_cfg = {"bootstrap": 20, "labels": list(LABELS)}
    evaluate_store([ckpt], tmp_path / "cxr.h5", results / "eval" / "mimic_test",
                   EvaluateConfig.from_section(eval_cfg), Scoring(32, "fp32", "cpu"))
    (results / "train" / "checkpoints.json").write_text(json.dumps({"best_step": 3}))
    (results / "mimic").mkdir()
    (results / "mimic" / "dataset_summary.json").write_text(
        json.dumps({"input_records": 25, "kept": 24, "rejected": 1}))

    # Retrieval and the published comparison, as their stages write them.
    from chexdino.published import write_comparison
    from chexdino.retrieval import recall_table

    recall_table({"image_to_report": np.array([0, 3, 12])}, {"image_to_report": 20},
                 n_bootstrap=10, seed=SEED).to_csv(
        results / "eval" / "mimic_test" / "retrieval.csv", index=False)
    write_comparison(results / "eval" / "mimic_test" / "auroc.csv",
                     results / "eval" / "mimic_test" / "summary.json",
                     Path(__file__).resolve().parents[1] / "workflow" / "resources"
                     / "published_auroc.csv", "chexpert_test",
                     results / "eval" / "chexpert_test" / "published_comparison.csv")

    folder, landing = results / "export", results / "model_summary.rst"
    assert main(["export", "--model", str(ckpt), "--results", str(results),
                 "--out-dir", str(folder), "--landing", str(landing),
                 "--evaluate", json.dumps(eval_cfg), "--select", '{"views": ["PA"]}']) == 0
    card = (folder / "README.md").read_text()
    edema = pd.read_csv(results / "eval" / "mimic_test" / "auroc.csv").set_index("label")
    assert f"| Edema | {edema.loc['Edema', 'auroc']:.3f} |" in card
    assert "24 used, 1 rejected" in card
    doctree = publish_doctree(landing.read_text(), settings_overrides={"report_level": 2,
                                                                      "halt_level": 2})
    text = doctree.astext()
    assert str(folder) in text and "image to report" in text and "0.812" in text
    assert "Tiu et al." in card and "| image to report | 0.333 [" in card
    assert "| Atelectasis | " in card and "| 0.812 | " in card

    # predict takes the folder (settings from its config) and gives the checkpoint's numbers.
    for i in range(3):
        Image.fromarray(images[i]).save(tmp_path / f"film{i}.png")
    films = [str(tmp_path / f"film{i}.png") for i in range(3)]
    for name, model_arg in (("ckpt", ckpt), ("folder", folder)):
        main(["predict", "--model", str(model_arg), *films, "--out",
              str(tmp_path / f"{name}.csv"), "--device", "cpu", "--precision", "fp32"])
    by_ckpt, by_folder = (pd.read_csv(tmp_path / f"{x}.csv").filter(like="prob_")
                          for x in ("ckpt", "folder"))
    assert list(by_folder.columns) == [f"prob_{x}" for x in LABELS]
    np.testing.assert_allclose(by_folder.to_numpy(), by_ckpt.to_numpy(), rtol=0, atol=1e-6)


@pytest.mark.slow  # 20 s on a 2-core machine
def test_evaluate_scores_exported_and_plain_open_clip_folders_like_the_checkpoint(tmp_path):
    import pandas as pd

    from chexdino import LABELS, h5store
    from chexdino.cli import main
    from chexdino.errors import ChexdinoError

    _, ckpt = _checkpoint(tmp_path, {"name": "vit_small_patch16_dinov3"})
    exported, plain = tmp_path / "exported", tmp_path / "plain"
    for folder in (exported, plain):
        export_model(ckpt, folder, SETTINGS)
    doc = json.loads((plain / "open_clip_config.json").read_text())
    del doc["chexdino"]  # any open_clip model folder: open_clip builds it, chexdino scores it
    (plain / "open_clip_config.json").write_text(json.dumps(doc))
    rng = np.random.default_rng(2)
    n = 20
    meta = pd.DataFrame({"dicom_id": [f"d{i}" for i in range(n)], "study_id": "s",
                         "subject_id": "p", "split": "test", "view": "PA",
                         "source_rows": 96, "source_cols": 96})
    for lab in LABELS:
        meta[lab] = rng.choice([1.0, 0.0], size=n)
    h5store.write_store(tmp_path / "cxr.h5", rng.integers(0, 255, (n, 96, 96), dtype=np.uint8),
                        meta, 96)
    probs = {}
    for name, model in (("ckpt", ckpt), ("exported", exported), ("plain", plain)):
        assert main(["evaluate", "--model", str(model), "--cxr", str(tmp_path / "cxr.h5"),
                     "--evaluate", json.dumps({"bootstrap": 5}),
                     *([] if name == "ckpt" else ["--precision", "fp32", "--device", "cpu"]),
                     "--out-dir", str(tmp_path / name)]) == 0
        probs[name] = pd.read_csv(tmp_path / name / "probabilities.csv").filter(like="prob_")
    for name in ("exported", "plain"):
        np.testing.assert_allclose(probs[name].to_numpy(), probs["ckpt"].to_numpy(), rtol=0,
                                   atol=1e-5)
    assert probs["ckpt"].to_numpy().std(axis=0).min() > 1e-4

    doc["preprocess_cfg"]["mean"] = [0.5, 0.5, 0.5]
    (plain / "open_clip_config.json").write_text(json.dumps(doc))
    from chexdino.model_files import load_model_folder

    with pytest.raises(ChexdinoError, match="mean"):
        load_model_folder(plain, "cpu", 64)
    del doc["preprocess_cfg"]["mean"]  # open_clip's default is CLIP's mean
    (plain / "open_clip_config.json").write_text(json.dumps(doc))
    with pytest.raises(ChexdinoError, match=r"size 64 \(evaluation input size is 32\)"):
        load_model_folder(plain, "cpu", 32)


def _write_dicom(path, pixels: np.ndarray, **attributes) -> None:
    """A minimal single-frame DX file (uncompressed), as a scanner would send it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.Modality, ds.SamplesPerPixel = "DX", 1
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.slow  # 54 s of CPU (140 s wall on a shared, loaded 2-core machine): one
# full-size model, built twice (here and by open_clip), three films
def test_the_cards_open_clip_recipe_gives_chexdino_predicts_embeddings(tmp_path):
    """The card's Use code, run by open_clip alone in a fresh interpreter that cannot import
    chexdino, on a large JPG (draft mode), a 16-bit PNG (min/max rescale) and a MONOCHROME1
    windowed DICOM: its embeddings and zero-shot probabilities are chexdino predict's."""
    import subprocess
    import sys

    from PIL import Image

    from chexdino.config import PROMPT_KEYS, PromptConfig, shipped_section
    from chexdino.demo import StudySigns, render_frontal
    from chexdino.images import load_cxr
    from chexdino.inference import embed_images, zero_shot_probs
    from chexdino.modelcard import run_prompts, use_code

    cfg = {"embed_dim": 512, "init_temperature": 0.07,
           "vision": {"name": "vit_base_patch16_dinov3", "weights": None, "random_init": True},
           "text": {"name": "ViT-B-32-quickgelu", "weights": None, "random_init": True}}
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg).eval()
    ckpt = tmp_path / "best.pt"
    torch.save({"step": 1, "model": model.state_dict(), "model_config": model.cfg.to_dict(),
                "input_size": 224, "precision": "fp32", "device": "cpu", "store_size": 320,
                "normalize": "imagenet"}, ckpt)
    evaluate = shipped_section("evaluate")
    settings = {"store_size": 320, "input_size": 224, "labels": list(evaluate["labels"]),
                "evaluate": {k: evaluate[k] for k in PROMPT_KEYS}, "precision": "fp32"}
    folder = tmp_path / "export"
    export_model(ckpt, folder, settings)
    ckpt.unlink()

    rng = np.random.default_rng(3)
    picture = render_frontal(rng, 1500, 1250, StudySigns(cardiomegaly=1.0, ctr=0.6))
    films = [tmp_path / "film.jpg", tmp_path / "film16.png", tmp_path / "film.dcm"]
    Image.fromarray(np.rint(picture * 255).astype(np.uint8)).save(films[0], quality=90)
    Image.fromarray(np.rint(200 + picture[:900, :760] * 3000).astype(np.uint16)).save(films[1])
    _write_dicom(films[2], np.rint(4095 - picture[::-1, :1100] * 4095),
                 PhotometricInterpretation="MONOCHROME1", WindowCenter=2048, WindowWidth=3500)
    assert Image.open(films[1]).mode.startswith("I")

    images = np.stack([load_cxr(f, 320, max_frame_pixels=MAX_FRAME_PIXELS)[0] for f in films])
    cpu = torch.device("cpu")
    ours = embed_images(model, images, 224, cpu, 8, "fp32", "imagenet")
    prompts = PromptConfig(**settings["evaluate"])
    our_probs = zero_shot_probs(model, ours, settings["labels"], prompts, cpu, "fp32")

    card = (folder / "README.md").read_text()
    assert "ImageNet's mean/std" in card and "model.eval()" in card
    assert "no acute cardiopulmonary process" in card  # the run's own prompt override
    assert list(run_prompts({"labels": settings["labels"],
                             "evaluate": settings["evaluate"]})) == settings["labels"]
    code = use_code(card).replace("PATH/TO/FOLDER", str(folder))
    code = code.replace('FILMS = ["film1.jpg", "film2.png", "film3.dcm"]',
                        f"FILMS = {[str(f) for f in films]!r}")
    code += (f"\nimport numpy\nnumpy.savez({str(tmp_path / 'theirs.npz')!r}, "
             "emb=image_emb.numpy(), probs=probs.numpy(), ranking=ranking.numpy())\n")
    script = tmp_path / "card_use.py"
    script.write_text(code)
    blocker = ("import sys; sys.modules['chexdino'] = None; "  # importing chexdino now fails
               f"exec(compile(open({str(script)!r}).read(), 'card_use.py', 'exec'))")
    done = subprocess.run([sys.executable, "-c", blocker], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = np.load(tmp_path / "theirs.npz")
    cosine = (ours.numpy() * theirs["emb"]).sum(axis=1)
    assert cosine.min() >= 0.9999, dict(zip([f.name for f in films], cosine, strict=True))
    np.testing.assert_allclose(theirs["probs"], our_probs, rtol=0, atol=1e-4)
    assert sorted(theirs["ranking"]) == [0, 1, 2]
