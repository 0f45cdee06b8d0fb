"""docs/configuration.md documents every key of config.yaml and the schema, and is current."""

from __future__ import annotations

import re

import pytest

from chexdino import config_docs


@pytest.fixture(scope="module")
def reference() -> str:
    return config_docs.OUT.read_text()


def test_reference_is_regenerated_from_config_and_schema(reference):
    assert reference == config_docs.generate(), (
        "docs/configuration.md is stale: run `python -m chexdino.config_docs`")


def test_every_key_of_config_and_schema_is_in_the_reference(reference):
    schema, config = config_docs.load(config_docs.SCHEMA), config_docs.load(config_docs.CONFIG)
    documented = set(re.findall(r"^### `([^`]+)`$", reference, flags=re.M))
    documented |= set(re.findall(r"^## (\w+)$", reference, flags=re.M))  # a section off (null)
    from_schema = {key for key, _ in config_docs.keys(schema)}
    from_config = set(config_docs.config_keys(config, schema))
    assert from_schema - documented == set(), "schema keys missing from the reference"
    assert from_config - documented == set(), "config.yaml keys missing from the reference"


def test_every_section_says_which_rules_rerun_and_names_real_rules():
    schema, config = config_docs.load(config_docs.SCHEMA), config_docs.load(config_docs.CONFIG)
    sections = set(schema["properties"]) | set(config)
    missing = sorted(sections - set(config_docs.RERUNS))
    assert not missing, (f"config sections {missing} have no entry in chexdino.config_docs.RERUNS: "
                         "add which rules take them as params (workflow/rules/*.smk)")
    rules = set()
    for smk in (config_docs.ROOT / "workflow" / "rules").glob("*.smk"):
        rules |= set(re.findall(r"^rule (\w+):", smk.read_text(), flags=re.M))
    named = set()
    for text in config_docs.RERUNS.values():
        named |= set(re.findall(r"\b([a-z]+_[a-z_]+|train|evaluate|export|tokens|impressions|"
                                r"retrieval)\b", text))
    unknown = sorted(named - rules - {"positive_templates", "negative_templates",
                                      "prompt_overrides", "batch_size", "chexpert_test"})
    assert not unknown, f"RERUNS names rules that workflow/rules/*.smk does not define: {unknown}"
    assert "image_shard" in rules
