"""The Snakemake report, rendered by a real browser (headless Chromium).

The report is a React application: its sections exist only once JavaScript has run, and a
category's results only once it is opened. The test renders a copy of the report with a small
script appended that opens every category and subcategory and the Statistics page (what a
reader clicks), and collects the rendered text into one element that `--dump-dom` returns.
Chromium (Debian's `chromium`) is installed with apt when missing and the test runs as root;
otherwise the test is skipped with the reason.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from chexdino.provenance import package_versions
from conftest import snakemake

# The finished demo run of the workflow tests (module fixtures, reused here).
from test_workflow import finished_run, overlay  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
RENDERED_ID = "chexdino-rendered"
# Opens each category, each of its subcategories, then Statistics; pauses let React render.
WALK_THE_REPORT = """
<script>
window.addEventListener("load", function () {
  const pages = [];
  const pause = () => new Promise((resolve) => setTimeout(resolve, 300));
  const keep = (title) => pages.push("== " + title + "\\n" + document.body.innerText);
  // Each result list is built when it is shown; a reader reaches the next one through the
  // breadcrumbs, which rebuild it, so the walk goes back the same way.
  const show = async (view) => { app.setView(view); await pause(); };
  (async function () {
    await pause();
    keep("landing");
    for (const category of Object.keys(categories).sort()) {
      await show({navbarMode: "menu"});
      app.showCategory(category);
      await pause();
      keep("category " + category);
      for (const sub of Object.keys(categories[category]).sort()) {
        await show({navbarMode: "category", category: category});
        await show({navbarMode: "subcategory", category: category, subcategory: sub});
        keep("subcategory " + category + " / " + sub);
      }
    }
    await show({navbarMode: "menu", content: "stats"});
    await pause();
    keep("statistics");
    const charts = document.querySelectorAll("#runtimes canvas, #runtimes svg");
    pages.push("== runtime charts\\n" + charts.length);
  })().catch((err) => pages.push("== error\\n" + err)).finally(function () {
    const out = document.createElement("pre");
    out.id = "RENDERED_ID";
    out.textContent = pages.join("\\n");
    document.body.appendChild(out);
  });
});
</script>
""".replace("RENDERED_ID", RENDERED_ID)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    found = find_chromium()
    if found:
        return found
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("headless Chromium is not installed and cannot be (needs root and apt-get): "
                    "apt-get install chromium")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}"
    found = find_chromium()
    assert found, "apt-get installed chromium but no chromium binary is on PATH"
    return found


def run_chromium(chromium: str, page: Path, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chexdino-chromium-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               "--virtual-time-budget=20000", *args, page.as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"chromium failed:\n{done.stderr[-3000:]}"
    return done


def render(chromium: str, report: Path, workdir: Path) -> str:
    """The text a reader sees on each page of ``report`` (landing, categories, statistics)."""
    walker = workdir / "report-walk.html"
    source = report.read_text()
    head, body_end, tail = source.rpartition("</body>")  # the last one: libraries contain some
    assert body_end, f"{report} has no </body>"
    walker.write_text(head + WALK_THE_REPORT + body_end + tail)
    dom = run_chromium(chromium, walker, "--dump-dom").stdout
    found = re.search(rf'<pre id="{RENDERED_ID}">(.*?)</pre>', dom, re.S)
    assert found, "the report's script did not run (no rendered pages in the DOM)"
    return html.unescape(found.group(1))


def screenshot(chromium: str, report: Path, png: Path) -> None:
    run_chromium(chromium, report, f"--screenshot={png}", "--window-size=1400,1000",
                 "--hide-scrollbars")
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def pages(text: str) -> dict[str, str]:
    return {part.split("\n", 1)[0]: part.split("\n", 1)[1] if "\n" in part else ""
            for part in text.split("== ")[1:]}


@pytest.mark.slow
def test_report_renders_its_sections_in_a_browser(finished_run, chromium, tmp_path):  # noqa: F811
    results, configs = finished_run
    report = tmp_path / "report.html"
    snakemake("--report", str(report), *configs)
    rendered = pages(render(chromium, report, tmp_path))
    assert "error" not in rendered, rendered.get("error")

    landing = rendered["landing"]
    for section in ("Workflow", "Statistics", "About", "Results", "1. Dataset", "2. Training",
                    "3. Zero-shot evaluation", "4. Provenance", "5. Exported model"):
        assert section in landing, section
    # The landing text of workflow/report/workflow.rst, with this run's settings filled in.
    for phrase in ("turned MIMIC-CXR images and reports into a CLIP-style chest X-ray model",
                   "CheXzero protocol", "vit_base_patch16_dinov3", "ViT-B-32-quickgelu",
                   "4 steps at batch 8", "20 bootstrap resamples",
                   "trained from random initialisation"):
        assert phrase in landing, phrase
    assert "{{" not in landing and "{%" not in landing  # no unrendered template
    # Headline numbers from this run's scorecards, included from results/run_summary.rst.
    assert "Headline results" in landing
    for evalset in ("chexpert_test", "mimic_test"):
        summary = json.loads((results / "eval" / evalset / "summary.json").read_text())
        summary = summary["headline"]
        mean = summary["mean_auroc_competition"]
        expected = f"{mean:.3f}" if mean is not None else "undefined"
        assert re.search(rf"{evalset} \({summary['n_images']} images\): {expected}", landing), \
            (evalset, expected)
    torch_version = package_versions(("torch",))["torch"]
    assert f"torch {torch_version}" in landing and "Produced by chexdino" in landing

    # Retrieval, the published comparison and the exported folder, from model_summary.rst.
    for phrase in ("Retrieval (MIMIC-CXR test split, study level)", "image to report",
                   "report to image", "R@10", "Comparison with CheXzero (CheXpert test)",
                   "0.932", "published inside our CI", "Exported model",
                   str(results / "export")):
        assert phrase in landing, phrase
    assert "README.md" in rendered["category 5. Exported model"]

    provenance = rendered["category 4. Provenance"]
    assert "provenance.csv" in provenance and "run_config.yaml" in provenance

    assert "rejects.csv" in rendered["category 1. Dataset"]
    assert "dataset_summary.png" in rendered["category 1. Dataset"]
    assert "curves.png" in rendered["category 2. Training"]
    zero_shot = {name: text for name, text in rendered.items()
                 if name.startswith("subcategory 3. Zero-shot evaluation")}
    assert sorted(zero_shot) == ["subcategory 3. Zero-shot evaluation / chexpert_test",
                                 "subcategory 3. Zero-shot evaluation / linear probe",
                                 "subcategory 3. Zero-shot evaluation / mimic_test"]
    probe = zero_shot.pop("subcategory 3. Zero-shot evaluation / linear probe")
    assert "auroc.csv" in probe and "auroc_vs_fraction.png" in probe
    for text in zero_shot.values():
        for name in ("auroc.csv", "roc.png", "probabilities.csv"):
            assert name in text, name
    assert "retrieval.csv" in zero_shot["subcategory 3. Zero-shot evaluation / mimic_test"]
    assert "published_comparison.csv" in zero_shot[
        "subcategory 3. Zero-shot evaluation / chexpert_test"]
    # Statistics: the per-rule runtimes chart was drawn.
    assert int(rendered["runtime charts"]) >= 1

    png = tmp_path / "report.png"
    screenshot(chromium, report, png)
