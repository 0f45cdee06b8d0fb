"""docs/configuration.md, generated from config.yaml and workflow/schemas/config.schema.yaml.

Every key of the schema gets its type, default (config.yaml's value), allowed values (the
schema's enum, bounds and pattern), its description (config.yaml's comment above it) and an
example; every section gets the stages that rerun when it changes (:data:`RERUNS`, kept by
hand from which rules take the section as ``params``, see workflow/rules/*.smk).

    python -m chexdino.config_docs            # rewrite docs/configuration.md
    python -m chexdino.config_docs --check    # exit 1 if it is stale

tests/test_config_docs.py fails when the reference is stale, or a section has no entry here.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config.yaml"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
OUT = ROOT / "docs" / "configuration.md"

_DOWNSTREAM_OF_DATA = ("train, plot_training, evaluate, retrieval, compare_published, "
                       "evaluate_model, compare_models, export, run_summary")

RERUNS: dict[str, str] = {
    "results": "everything: a new results folder holds no outputs yet",
    "mimic": "select_mimic (the paths are its inputs and params), then image_shard, "
             "gather_images, impressions, tokens, dataset_summary, " + _DOWNSTREAM_OF_DATA,
    "chexpert_test": "select_chexpert_test, its image_shard and gather_images, the "
                     "chexpert_test evaluate, compare_published and evaluate_model jobs, "
                     "export, run_summary",
    "select": "select_mimic, then image_shard, gather_images, impressions, tokens, "
              "dataset_summary, " + _DOWNSTREAM_OF_DATA + " (export also prints the views "
              "and splits in the model card)",
    "images": "image_shard and gather_images (every data set), then dataset_summary, "
              + _DOWNSTREAM_OF_DATA,
    "reports": "tokens, then " + _DOWNSTREAM_OF_DATA,
    "model": "train, then " + _DOWNSTREAM_OF_DATA.removeprefix("train, "),
    "train": "train, then " + _DOWNSTREAM_OF_DATA.removeprefix("train, "),
    "evaluate": "the prompt keys (positive_templates, negative_templates, prompt_overrides) "
                "rerun train (validation scores with them) and everything after it; bootstrap, "
                "seed and batch_size rerun evaluate, retrieval, evaluate_model; every key "
                "reruns evaluate, evaluate_model, compare_models, compare_published, export, "
                "run_summary",
    "rsna_pneumonia": "select_rsna_pneumonia, its image_shard and gather_images, its evaluate "
                      "job, run_summary",
    "siim_pneumothorax": "select_siim_pneumothorax, its image_shard and gather_images, its "
                         "evaluate job, run_summary",
    "chexpert_5x200": "select_chexpert_5x200, its image_shard and gather_images, its evaluate "
                      "job, accuracy_5x200, run_summary",
    "compare_models": "evaluate_model (only the models added or changed), compare_models, "
                      "export, run_summary",
    "report": "dataset_summary, then run_summary",
    "linear_probe": "linear_probe only (the cached embeddings stay: the embed jobs take "
                    "evaluate.batch_size alone); enabled: false drops the embed and "
                    "linear_probe jobs",
}
"""Section -> the rules that rerun when one of its keys changes. Every section also reruns
run_summary, whose params hold the whole config."""


def load(path: Path) -> Any:
    return yaml.safe_load(Path(path).read_text())


def comments(config_text: str) -> dict[str, str]:
    """``{dotted key: the comment lines right above it}`` of config.yaml."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in config_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"^( *)([A-Za-z_][\w ]*?):(\s|$)", line)
        if not match:
            pending = [] if not stripped else pending
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([*(k for _, k in stack), key])
        stack.append((indent, key))
        if pending:
            found[dotted] = " ".join(pending)
        pending = []
    return found


def _types(spec: Mapping[str, Any]) -> list[str]:
    kinds = spec.get("type")
    if kinds is None:
        return []
    return [kinds] if isinstance(kinds, str) else list(kinds)


def _is_section(spec: Mapping[str, Any]) -> bool:
    kinds = _types(spec)
    return "object" in kinds and "integer" not in kinds and bool(spec.get("properties"))


def keys(schema: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, dict]]:
    """(dotted key, schema) of every documented key: leaves, and objects without properties."""
    for name, spec in schema.get("properties", {}).items():
        dotted = f"{prefix}{name}"
        if _is_section(spec):
            yield from keys(spec, dotted + ".")
        else:
            yield dotted, spec


def config_keys(config: Mapping[str, Any], schema: Mapping[str, Any], prefix: str = ""
                ) -> Iterator[str]:
    """Dotted keys of config.yaml, descending where the schema has a section."""
    for name, value in config.items():
        spec = schema.get("properties", {}).get(name, {})
        if isinstance(value, Mapping) and _is_section(spec):
            yield from config_keys(value, spec, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def _lookup(config: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _type_text(spec: Mapping[str, Any]) -> str:
    kinds = _types(spec)
    if not kinds and "enum" in spec:
        kinds = sorted({type(v).__name__.replace("bool", "boolean").replace("str", "string")
                        for v in spec["enum"]})
    text = " or ".join(kinds) or "any"
    if "array" in kinds and "items" in spec:
        text += " of " + (" or ".join(_types(spec["items"])) or "any")
    return text


def _allowed(spec: Mapping[str, Any]) -> str:
    parts = []
    if "enum" in spec:
        parts.append(", ".join(f"`{_yaml_value(v)}`" for v in spec["enum"]))
    items = spec.get("items") or {}
    if "enum" in items:
        parts.append("each one of " + ", ".join(f"`{_yaml_value(v)}`" for v in items["enum"]))
    for source in (spec, items):
        for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                          ("exclusiveMaximum", "<")):
            if key in source:
                parts.append(f"{sign} {source[key]}")
    if "pattern" in spec:
        parts.append(f"matches `{spec['pattern']}`")
    for key, word in (("minItems", "at least"), ("maxItems", "at most")):
        if key in spec:
            parts.append(f"{word} {spec[key]} items")
    if spec.get("uniqueItems"):
        parts.append("no repeats")
    if "properties" in spec:
        parts.append("or a mapping with keys " + ", ".join(f"`{k}`" for k in spec["properties"]))
    return "; ".join(parts) or "any"


def _yaml_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _flow(value: Any) -> str:
    """A value as one line of YAML."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix(
        "\n...").strip()


def _example(dotted: str, value: Any) -> str:
    parts = dotted.split(".")
    lines = [f"{'  ' * i}{p}:" for i, p in enumerate(parts[:-1])]
    lines.append(f"{'  ' * (len(parts) - 1)}{parts[-1]}: {_flow(value)}")
    return "\n".join(lines)


def render(config: Mapping[str, Any], schema: Mapping[str, Any], config_text: str) -> str:
    """The Markdown reference."""
    notes = comments(config_text)
    out = [
        "# Configuration reference", "",
        "<!-- Generated by `python -m chexdino.config_docs` from config.yaml and "
        "workflow/schemas/config.schema.yaml; do not edit by hand. -->", "",
        "Every key of `config.yaml`: its type, default (the value in `config.yaml`), allowed "
        "values (checked by `workflow/schemas/config.schema.yaml` before any job starts), what "
        "it does, and which stages rerun when it changes. Override keys in a file of your own "
        "(`snakemake --configfile my.yaml`) or on the command line "
        "(`snakemake --config train='{steps: 500}'`); a key left out keeps its default.", "",
        "Snakemake reruns a rule when the settings it takes as `params` change "
        "(`--rerun-triggers params`, the default), and then everything downstream of it. Every "
        "section also reruns `run_summary`, which records the whole configuration.", "",
        "Sections: " + ", ".join(f"[`{s}`](#{s})"
                                 for s in schema.get("properties", {})), "",
    ]
    by_section: dict[str, list[tuple[str, dict]]] = {}
    for dotted, spec in keys(schema):
        by_section.setdefault(dotted.split(".")[0], []).append((dotted, spec))
    for section, entries in by_section.items():
        out += [f"## {section}", ""]
        if notes.get(section) and entries[0][0] != section:
            out += [notes[section], ""]
        out += [f"**Reruns when changed:** {RERUNS.get(section, 'NOT DOCUMENTED')}.", ""]
        for dotted, spec in entries:
            present, value = _lookup(config, dotted)
            out += [f"### `{dotted}`", ""]
            if notes.get(dotted):
                out += [notes[dotted], ""]
            out += [f"- type: {_type_text(spec)}",
                    f"- default: `{_flow(value)}`" if present else "- default: none (optional)",
                    f"- allowed: {_allowed(spec)}", "",
                    "```yaml", _example(dotted, value if present else None), "```", ""]
    return "\n".join(out).rstrip() + "\n"


def generate() -> str:
    return render(load(CONFIG), load(SCHEMA), CONFIG.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        if not args.out.is_file() or args.out.read_text() != text:
            print(f"{args.out} is stale: run python -m chexdino.config_docs", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
