"""The exported model's card (README.md) and the report's landing-page block.

Both are built from a finished run's results folder: the run's configuration, the training
record, the dataset accounting, every evaluation set's AUROC table, retrieval and the
comparisons with other models. Tables are written as Markdown for the card and as
reStructuredText list-tables for the Snakemake report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from chexdino import __version__
from chexdino.model_files import CARD_FILE, CONFIG_FILE, TOKENIZER, WEIGHTS_FILE

# --------------------------------------------------------------------------------------
# the model card
# --------------------------------------------------------------------------------------


def _num(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{float(x):.3f}"


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (floats to 3 decimals, NaN as n/a)."""
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = [_num(v) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scorecard_markdown(table: pd.DataFrame, headline: Mapping[str, Any]) -> str:
    """Per-label AUROC with CIs plus the headline mean, for the card."""
    shown = pd.DataFrame({
        "label": table["label"],
        "AUROC": table["auroc"].astype(float),
        "95% CI": [f"[{_num(lo)}, {_num(hi)}]"
                   for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)],
        "positives": table["n_pos"], "negatives": table["n_neg"],
    })
    lo, hi = headline.get("mean_auroc_competition_ci") or [None, None]
    return (markdown_table(shown) + "\n\nMean over the five competition labels: "
            f"**{_num(headline.get('mean_auroc_competition'))}** [{_num(lo)}, {_num(hi)}] "
            f"({headline.get('n_images', '?')} images).")


NORMALIZATION_NAMES = {"clip": "CLIP's mean/std", "imagenet": "ImageNet's mean/std"}


def run_prompts(section: Mapping[str, Any]) -> dict[str, tuple[list[str], list[str]]]:
    """``{label: (positive prompts, negative prompts)}`` an export records: its labels filled
    into its ``evaluate`` templates, with its per-label overrides (chexdino's own rule)."""
    from chexdino.zeroshot import prompt_pairs

    evaluate = section.get("evaluate", {})
    overrides = {label: (pair["positive"], pair["negative"]) if isinstance(pair, Mapping)
                 else tuple(pair)
                 for label, pair in (evaluate.get("prompt_overrides") or {}).items()}
    return prompt_pairs(section["labels"], evaluate.get("positive_templates", ["{}"]),
                        evaluate.get("negative_templates", ["no {}"]), overrides)


def use_lines(section: Mapping[str, Any]) -> list[str]:
    """The card's "Use" section from the export's ``chexdino`` record: loading with open_clip,
    the exact film loader, zero-shot with this run's prompts and chexdino's scoring, retrieval."""
    prep = section["preprocessing"]
    normalize = str(prep.get("normalize", "clip"))
    prompts = run_prompts(section)
    prompt_lines = ["PROMPTS = {  # this run's evaluate prompts: label -> (positive, negative)"]
    prompt_lines += [f"    {label!r}: ({pos!r}, {neg!r})," for label, (pos, neg) in
                     prompts.items()]
    prompt_lines.append("}")
    return [
        "## Use", "",
        "With open_clip alone (no chexdino needed). `preprocess.py` in this folder turns a film "
        "into the greyscale image chexdino stores (JPG/PNG/DICOM; JPEG draft-mode decoding, "
        "16-bit PNGs rescaled by their min and max, long side to "
        f"{prep['store_size']} px with Lanczos, centred on black); open_clip's `preprocess` "
        f"then resizes it to {prep['input_size']} px (bicubic) and normalises it with "
        f"{NORMALIZATION_NAMES.get(normalize, normalize)} ({prep['mean']}, {prep['std']}). "
        "Together they reproduce chexdino's embeddings (cosine >= 0.9999, tested); open_clip's "
        "`preprocess` on the raw file does not (it letterboxes straight to the input size, and "
        "PIL turns a 16-bit PNG white).", "",
        "```python",
        "import sys",
        "",
        "import open_clip",
        "import torch",
        "",
        'FOLDER = "PATH/TO/FOLDER"  # this folder',
        'FILMS = ["film1.jpg", "film2.png", "film3.dcm"]',
        "sys.path.insert(0, FOLDER)",
        "from preprocess import load_film  # noqa: E402",
        "",
        'model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{FOLDER}")',
        "model.eval()",
        'tokenizer = open_clip.get_tokenizer(f"local-dir:{FOLDER}")',
        "",
        "with torch.no_grad():",
        "    images = torch.stack([preprocess(load_film(f)) for f in FILMS])",
        "    image_emb = model.encode_image(images, normalize=True)  # (films, "
        f"{section['model_config'].get('embed_dim', 512)})",
        "",
        *prompt_lines,
        "",
        "def direction(prompts):  # several prompts: mean of unit embeddings, re-normalised",
        "    emb = model.encode_text(tokenizer(prompts), normalize=True).mean(dim=0)",
        "    return emb / emb.norm()",
        "",
        "with torch.no_grad():",
        "    pos = torch.stack([direction(p) for p, _ in PROMPTS.values()])",
        "    neg = torch.stack([direction(n) for _, n in PROMPTS.values()])",
        "    # chexdino's score (CheXzero's): softmax over the pair of cosine similarities,",
        "    # no temperature (logit_scale is not applied)",
        "    pair = torch.stack([image_emb @ pos.T, image_emb @ neg.T], dim=-1)",
        "    probs = pair.softmax(dim=-1)[..., 0]  # (films, labels)",
        "",
        "    # retrieval: rank the films for a report text by cosine similarity",
        '    query = model.encode_text(tokenizer(["moderate left pleural effusion"]), '
        "normalize=True)",
        "    ranking = (image_emb @ query.T).squeeze(1).argsort(descending=True)",
        "```", "",
        "`chexdino predict --model FOLDER FILMS... --out p.csv` gives the same probabilities "
        "(it reads the prompts and preprocessing from `open_clip_config.json` under "
        f"`chexdino`). Tokenizer: {TOKENIZER}. Weights: `{WEIGHTS_FILE}` (safetensors, "
        "open_clip key layout).", "",
    ]


def use_card(section: Mapping[str, Any]) -> str:
    """A card with the recipe only (an export made outside a finished run)."""
    return "\n".join(["# chexdino chest X-ray vision-language model", "",
                      *use_lines(section)])


def use_code(card: str) -> str:
    """The Python block of a card's "Use" section (the tests run it)."""
    return card.split("## Use", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def model_card(
    config: Mapping[str, Any], training: Mapping[str, Any], dataset: Mapping[str, Any],
    scorecards: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]],
    extra_sections: Mapping[str, str] | None = None, export: Mapping[str, Any] | None = None,
) -> str:
    """The exported folder's README.md: what the model is, how it was made and scored, limits.

    ``export``: the export's ``chexdino`` record (:func:`chexdino.export.export_section`),
    which the Use section, the input size, normalisation and prompts are read from; without it
    the card has no Use section."""
    model, train = config.get("model", {}), config.get("train", {})
    prep = (export or {}).get("preprocessing", {})
    input_size = prep.get("input_size", train.get("input_size"))
    normalize = prep.get("normalize", train.get("normalize", "clip"))
    env = training.get("environment", {})
    random_init = [t for t in ("vision", "text") if model.get(t, {}).get("random_init")]
    lines = [
        "# chexdino chest X-ray vision-language model", "",
        f"A CLIP-style model trained by chexdino {env.get('chexdino', __version__)} on "
        "MIMIC-CXR chest X-rays and the impressions of their radiology reports: image tower "
        f"`{model.get('vision', {}).get('name')}` (timm, CLS token, linear projection to "
        f"{model.get('embed_dim')}-d), text tower of open_clip's "
        f"`{model.get('text', {}).get('name')}`, both L2-normalised into one space.", "",
    ]
    if random_init:
        towers = " and ".join(random_init) + (" towers were" if len(random_init) > 1
                                               else " tower was")
        lines += [f"**Not pretrained: the {towers} trained from random initialisation** "
                  "(`model.*.random_init: true`).", ""]
    if export is not None:
        lines += use_lines(export)
    if model.get("vision", {}).get("overrides"):
        lines += ["The image tower is a shrunken timm model (`timm_model_kwargs` "
                  f"{json.dumps(model['vision']['overrides'])}): open_clip 3.3.0 cannot pass "
                  "constructor arguments to timm and refuses this config by name; load it with "
                  "chexdino or an open_clip that knows `timm_model_kwargs`.", ""]
    lines += [
        "## Data and training", "",
        f"- Data: {dataset.get('input_records', '?')} MIMIC-CXR image records, "
        f"{dataset.get('kept', '?')} used, {dataset.get('rejected', '?')} rejected with a reason; "
        f"views {config.get('select', {}).get('views')}, official splits "
        f"{config.get('select', {}).get('splits')} (train for training, validate for model "
        "selection, test for the scores below).",
        f"- Training: {train.get('steps')} steps at batch {train.get('batch_size')}, "
        f"{train.get('optimizer')} lr {train.get('lr')}, input {input_size} px "
        f"({NORMALIZATION_NAMES.get(normalize, normalize)}), "
        f"temperature initialised at {model.get('init_temperature')}; best checkpoint at step "
        f"{training.get('best_step', '?')} by {training.get('select_by', '?')}.",
        f"- Hardware and software: {env.get('hardware', 'not recorded')}; source revision "
        f"`{env.get('source_revision', 'unknown')}`, torch "
        f"{env.get('packages', {}).get('torch', '?')}, timm "
        f"{env.get('packages', {}).get('timm', '?')}, open_clip "
        f"{env.get('packages', {}).get('open_clip_torch', '?')}.", "",
        "## Zero-shot scorecard", "",
        "CheXzero's protocol: " + _prompt_sentence(export or {"evaluate": config.get(
            "evaluate", {})}) + ", softmax over the pair of cosine similarities (no "
        "temperature); AUROC with percentile bootstrap 95% CIs.", "",
    ]
    for name, (table, headline) in scorecards.items():
        lines += [f"### {name}", "", scorecard_markdown(table, headline), ""]
    for title, body in (extra_sections or {}).items():
        lines += [f"## {title}", "", body, ""]
    lines += [
        "## Intended use and limits", "",
        "A research model for studying chest X-ray representation learning and zero-shot "
        "classification. It is not a medical device and must not be used for diagnosis or "
        "treatment decisions. It was trained on one hospital's data (MIMIC-CXR, Beth Israel "
        f"Deaconess, adult patients), views {config.get('select', {}).get('views')} only, with "
        "the reports' impressions as its only supervision; its scores on other populations, "
        "scanners, children or other views are unknown. Labels with few positives have wide "
        "intervals or none. MIMIC-CXR's data use agreement applies to the training data; check "
        "it before sharing this model.", "",
    ]
    return "\n".join(lines)


def _prompt_sentence(section: Mapping[str, Any]) -> str:
    """How the run's prompts are made, from its recorded ``evaluate`` settings."""
    evaluate = section.get("evaluate", {})
    pos = ", ".join(f"`{t}`" for t in evaluate.get("positive_templates", ["{}"]))
    neg = ", ".join(f"`{t}`" for t in evaluate.get("negative_templates", ["no {}"]))
    text = f"prompts {pos} vs {neg} ({{}} = the lowercased label)"
    overrides = evaluate.get("prompt_overrides") or {}
    for label, pair in overrides.items():
        p, n = (pair["positive"], pair["negative"]) if isinstance(pair, Mapping) else pair
        text += f"; {label}: {', '.join(f'`{x}`' for x in p)} vs " + ", ".join(
            f"`{x}`" for x in n)
    return text


# --------------------------------------------------------------------------------------
# tables of a finished run's results folder, for the card and the landing page
# --------------------------------------------------------------------------------------

RETRIEVAL_CSV = "eval/mimic_test/retrieval.csv"
PUBLISHED_CSV = "eval/chexpert_test/published_comparison.csv"


def run_scorecards(results: Path) -> dict[str, tuple[pd.DataFrame, dict[str, Any]]]:
    """Each evaluation set's AUROC table and headline (with its image count), by set name."""
    cards = {}
    for summary in sorted(Path(results).glob("eval/*/summary.json")):
        doc = json.loads(summary.read_text())
        headline = {**doc.get("headline", {}), "n_images": doc.get("n_images")}
        table = pd.read_csv(summary.with_name("auroc.csv"), keep_default_na=False, na_values=[""])
        cards[summary.parent.name] = (table, headline)
    return cards


def _with_ci(value: float, low: float, high: float) -> str:
    """``0.812 [0.780, 0.840]``; n/a for an undefined value."""
    if pd.isna(value):
        return "n/a"
    return f"{value:.3f}" + ("" if pd.isna(low) or pd.isna(high) else f" [{low:.3f}, {high:.3f}]")


def retrieval_view(table: pd.DataFrame) -> pd.DataFrame:
    """retrieval.csv as one row per direction, Recall@K [95% CI] per column."""
    rows = []
    for direction, part in table.groupby("direction", sort=False):
        row = {"direction": direction.replace("_", " ")}
        for r in part.itertuples():
            row[f"R@{r.k}"] = _with_ci(r.recall, r.ci_low, r.ci_high)
        row["queries"], row["candidates"] = int(part["n_queries"].iloc[0]), int(
            part["n_candidates"].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_view(table: pd.DataFrame) -> pd.DataFrame:
    """published_comparison.csv as label, ours [CI], published, difference, inside our CI."""
    return pd.DataFrame({
        "label": table["label"],
        "chexdino [95% CI]": [_with_ci(*v) for v in
                              zip(table["chexdino"], table["ci_low"], table["ci_high"],
                                  strict=True)],
        "published": table["published"].astype(float),
        "difference": table["difference"].astype(float),
        "published inside our CI": table["published_inside_ci"],
    })


def extra_tables(results: Path) -> dict[str, tuple[pd.DataFrame, str]]:
    """Retrieval, side-by-side and published-comparison tables of a results folder, where
    they exist, each with a sentence saying what it is."""
    found = {}
    path = Path(results) / RETRIEVAL_CSV
    if path.is_file():
        found["Retrieval (MIMIC-CXR test split, study level)"] = (
            retrieval_view(pd.read_csv(path)),
            "Recall@K [95% bootstrap CI]: studies (mean of their frontal films) query the "
            "distinct impressions (image to report) and impressions query the studies (report "
            "to image).")
    for path in sorted(Path(results).glob("eval/*/model_comparison.csv")):
        found[f"Models side by side ({path.parent.name})"] = (
            pd.read_csv(path, keep_default_na=False),
            "Zero-shot AUROC [95% bootstrap CI] of each model scored by this workflow with the "
            "same protocol, images and bootstrap resamples (compare_models).")
    path = Path(results) / PUBLISHED_CSV
    if path.is_file():
        table = pd.read_csv(path, keep_default_na=False, na_values=[""])
        note = (f"Published: {table['published_model'].iloc[0]}, {table['source'].iloc[0]}. "
                "Difference = chexdino - published.") if len(table) else ""
        found["Comparison with CheXzero (CheXpert test)"] = (comparison_view(table), note)
    return found


def rst_table(frame: pd.DataFrame) -> str:
    """A DataFrame as an rst list-table (floats to 3 decimals), for the report."""
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for i, row in enumerate([list(frame.columns), *frame.itertuples(index=False)]):
        for j, cell in enumerate(row):
            text = _num(cell) if isinstance(cell, float) and i else str(cell)
            lines.append(f"   {'* -' if j == 0 else '  -'} {text or ' '}")
    return "\n".join(lines)


def landing_block(out_dir: Path, tables: Mapping[str, tuple[pd.DataFrame, str]]) -> str:
    """The landing-page section: retrieval, the published comparison, where the model is."""
    lines = []
    for title, (frame, note) in tables.items():
        lines += [title, "~" * len(title), "", note, "", rst_table(frame), ""]
    lines += ["Exported model", "~~~~~~~~~~~~~~", "",
              f"``{out_dir}``: ``{WEIGHTS_FILE}``, ``{CONFIG_FILE}`` (open_clip: "
              f"``open_clip.create_model_and_transforms('local-dir:{out_dir}')``) and the model "
              f"card ``{CARD_FILE}`` (under 5. Exported model). New films: "
              f"``chexdino predict --model {out_dir} FILES... --out predictions.csv``.", ""]
    return "\n".join(lines)


