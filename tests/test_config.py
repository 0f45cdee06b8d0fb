"""Config validation: every bad value is reported with its dotted key before any job starts."""

from __future__ import annotations

import copy

import pytest
import yaml

from chexdino.config import (
    EvaluateConfig,
    ImagesConfig,
    LinearProbeConfig,
    ModelConfig,
    PromptConfig,
    ReportConfig,
    ReportsConfig,
    SelectConfig,
    TrainConfig,
    validate_config,
)
from chexdino.errors import ConfigError
from conftest import REPO, snakemake, write_config


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


@pytest.fixture
def good_config(small_demo) -> dict:
    root, _ = small_demo
    m = root / "mimic"
    cfg = merge(yaml.safe_load((REPO / "config.yaml").read_text()),
                yaml.safe_load((REPO / "tests/demo/config.yaml").read_text()))
    cfg["mimic"].update(image_root=str(m), report_root=str(m),
                        split_csv=str(m / "mimic-cxr-2.0.0-split.csv.gz"),
                        metadata_csv=str(m / "mimic-cxr-2.0.0-metadata.csv.gz"),
                        chexpert_csv=str(m / "mimic-cxr-2.0.0-chexpert.csv.gz"))
    cfg["chexpert_test"].update(groundtruth_csv=str(root / "chexpert" / "groundtruth.csv"),
                                image_root=str(root / "chexpert" / "CheXpert-v1.0"))
    for name in ("rsna_pneumonia", "siim_pneumothorax", "chexpert_5x200"):
        cfg[name] = None  # the demo's extra sets read demo-data/, absent here
    return cfg


def set_key(cfg: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return cfg


DELETE = object()

BAD_VALUES = [
    ("train.steps", -5, "train.steps = -5"),
    ("train.steps", 0, "train.steps = 0"),
    ("train.steps", "many", "train.steps = 'many'"),
    ("train.steps", 2.5, "train.steps = 2.5"),
    ("train.batch_size", 1, "train.batch_size = 1"),
    ("train.lr", 0, "train.lr = 0"),
    ("train.lr", -1e-4, "train.lr"),
    ("train.momentum", 1.5, "train.momentum = 1.5"),
    ("train.optimizer", "adam", "train.optimizer = 'adam'"),
    ("train.precision", "fp16", "train.precision = 'fp16'"),
    ("train.select_by", "accuracy", "train.select_by"),
    ("train.data_on_device", "tpu", "train.data_on_device"),
    ("train.device", "gpu0", "train.device = 'gpu0'"),
    ("train.crop_scale", [0.9], "train.crop_scale"),
    ("train.crop_scale", [1.0, 0.9], "lower bound is above the upper bound"),
    ("train.crop_scale", [0.0, 1.0], "train.crop_scale[0]"),
    ("train.hflip", 2, "train.hflip = 2"),
    ("train.val_every", 0, "train.val_every = 0"),
    ("train.compile", "yes", "train.compile = 'yes'"),
    ("train.compile_mode", "fast", "train.compile_mode"),
    ("train.warmup_steps", -1, "train.warmup_steps = -1"),
    ("train.schedule", "linear", "train.schedule"),
    ("train.normalize", "imagenet21k", "train.normalize = 'imagenet21k'"),
    ("train.stepz", 10, "train: unknown key(s) ['stepz']"),
    ("images.size", 8, "images.size = 8"),
    ("images.shards", 0, "images.shards = 0"),
    ("images.shards", {"mimic": 0, "chexpert_test": 1}, "images.shards.mimic = 0"),
    ("images.shards", {"chexpert_test": 1}, "images.shards: 'mimic' is a required property"),
    ("images.shards", {"mimic": 8, "chexpert": 1}, "images.shards: unknown key(s) ['chexpert']"),
    ("images.shards", {"mimic": 8}, "no count for chexpert_test, which is configured"),
    ("images.shards", "64", "images.shards = '64'"),
    ("images.max_frame_pixels", 0, "images.max_frame_pixels = 0"),
    ("select.views", [], "select.views"),
    ("select.views", ["FRONTAL"], "select.views[0] = 'FRONTAL'"),
    ("select.missing_view", "drop", "select.missing_view"),
    ("select.splits", ["training"], "select.splits[0] = 'training'"),
    ("select.max_images", 0, "select.max_images = 0"),
    ("reports.context_length", 512, "reports.context_length = 512"),
    ("evaluate.labels", ["Cardiomegaly", "Heart Failure"], "evaluate.labels[1]"),
    ("evaluate.labels", ["Edema", "Edema"], "evaluate.labels"),
    ("evaluate.uncertain", "ignore", "evaluate.uncertain"),
    ("evaluate.positive_templates", ["a chest x-ray"], "evaluate.positive_templates[0]"),
    ("evaluate.bootstrap", -1, "evaluate.bootstrap = -1"),
    ("evaluate.ensemble_top_k", 5, "evaluate.ensemble_top_k = 5 exceeds train.keep_best"),
    ("model.embed_dim", 0, "model.embed_dim = 0"),
    ("model.init_temperature", 0, "model.init_temperature = 0"),
    ("model.vision.random_init", False, "model.vision.weights is not set"),
    ("model.vision.weights", "/nope/dinov3.pth", "model.vision.weights is set and"),
    ("mimic.image_suffix", ".tiff", "mimic.image_suffix"),
    ("mimic.split_csv", "/nope/split.csv.gz", "mimic.split_csv: file not found: /nope"),
    ("mimic.image_root", "/nope/images", "mimic.image_root: folder not found"),
    ("mimic.report_root", DELETE, "mimic: 'report_root' is a required property"),
    ("results", 5, "results = 5"),
    ("surprise", 1, "(top level): unknown key(s) ['surprise']"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_VALUES,
                         ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_bad_value_is_named(good_config, key, value, message):
    with pytest.raises(ConfigError) as info:
        validate_config(set_key(good_config, key, value))
    assert message in str(info.value)


def test_good_config_passes_and_missing_weights_file_is_named(good_config):
    validate_config(good_config)
    good_config["model"]["text"].update(random_init=False, weights="/nope/ViT-B-32.pt")
    with pytest.raises(ConfigError, match="model.text.weights: weights file not found"):
        validate_config(good_config)


def test_shards_one_count_or_one_per_data_set(good_config):
    """The shipped default is per data set; one number for all, or a mapping without the
    CheXpert test set when none is configured, are valid too."""
    assert good_config["images"]["shards"] == 2  # the demo's one number for both
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())["images"]["shards"]
    assert shipped == {"mimic": 64, "chexpert_test": 1, "rsna_pneumonia": 4,
                       "siim_pneumothorax": 2, "chexpert_5x200": 1}
    validate_config(set_key(good_config, "images.shards", shipped))
    good_config["chexpert_test"] = None
    validate_config(set_key(good_config, "images.shards", {"mimic": 64}))


def test_all_problems_reported_at_once(good_config):
    set_key(good_config, "train.steps", -1)
    set_key(good_config, "images.shards", 0)
    with pytest.raises(ConfigError, match=r"2 problem\(s\)"):
        validate_config(good_config)


def test_snakemake_stops_before_any_job(good_config, tmp_path):
    """The workflow validates at parse time: a bad value ends the run with its key named."""
    set_key(good_config, "train.lr", -1.0)
    good_config["results"] = str(tmp_path / "results")
    bad = write_config(tmp_path / "bad.yaml", good_config)
    result = snakemake("-n", "--configfile", str(bad), cores=1, check=False)
    assert result.returncode != 0
    assert "train.lr = -1.0" in result.stdout
    assert not (tmp_path / "results").exists()


SECTIONS = [SelectConfig, ImagesConfig, ReportsConfig, ModelConfig, TrainConfig, EvaluateConfig,
            ReportConfig, LinearProbeConfig]


@pytest.mark.parametrize("section", SECTIONS, ids=lambda c: c.NAME)
def test_each_section_is_one_typed_object_with_config_yamls_keys_and_no_defaults_of_its_own(
    section,
):
    """config.yaml, the schema and the dataclass name the same keys; the dataclass states no
    default (config.yaml is the one place), so building it from config.yaml gives its values."""
    import dataclasses

    shipped = yaml.safe_load((REPO / "config.yaml").read_text())[section.NAME]
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    properties = schema["properties"][section.NAME]["properties"]
    fields = dataclasses.fields(section)
    assert [f.name for f in fields] and {f.name for f in fields} == set(shipped) == set(
        properties)
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in fields)
    assert section.from_section().to_dict() == shipped
    assert section.from_section(shipped).to_dict() == shipped


def test_a_section_takes_config_yamls_values_for_keys_it_leaves_out_and_refuses_unknown_ones():
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg = TrainConfig.from_section({"steps": 7})
    assert cfg.steps == 7 and cfg.lr == shipped["train"]["lr"]
    with pytest.raises(ConfigError, match=r"train: unknown key\(s\) \['stepz'\]"):
        TrainConfig.from_section({"stepz": 7})
    with pytest.raises(ConfigError, match=r"model.vision: unknown key\(s\) \['wieghts'\]"):
        ModelConfig.from_section({"vision": {"wieghts": None}})
    model = ModelConfig.from_section({"vision": {"weights": None, "random_init": True}})
    assert model.vision.name == shipped["model"]["vision"]["name"]
    assert model.text.weights == shipped["model"]["text"]["weights"]
    # A checkpoint's model_config is rebuilt as written: nothing is filled in.
    assert ModelConfig.from_dict(model.to_dict()) == model
    with pytest.raises(ConfigError, match=r"model_config.vision: missing key\(s\)"):
        ModelConfig.from_dict({**model.to_dict(), "vision": {"name": "x"}})
    # Training's validation takes only the prompt keys of evaluate:
    prompts = EvaluateConfig.from_section({"bootstrap": 3}).prompts
    assert prompts == PromptConfig.from_section()
    assert prompts.overrides()["No Finding"] == (("no acute cardiopulmonary process",),
                                                 ("acute cardiopulmonary process",))
