"""``chexdino`` command line: one subcommand per workflow stage (the rules call these)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from chexdino.errors import ChexdinoError

log = logging.getLogger("chexdino")

COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def command(name: str):
    def register(func):
        COMMANDS[name] = func
        return func

    return register


ENVIRONMENT_HELP = "write this job's environment (provenance) to this JSON file"


def _json(text: str) -> dict:
    return json.loads(text)


def _job_environment() -> dict:
    """This job's record for the provenance table (imported here, not by the stage modules,
    so that editing ``provenance`` does not rerun the data stages)."""
    from chexdino.provenance import environment

    return environment()


def _write_job_record(path: str | None) -> None:
    """A table-writing stage's record, as a JSON file beside its tables (``--environment``)."""
    if path:
        from chexdino.provenance import write_job_record

        write_job_record(Path(path))


def parse_shard(text: str) -> tuple[int, int]:
    """Snakemake's scatter item ``k-of-n`` -> (k, n), 1-based."""
    k, _, n = text.partition("-of-")
    if not (k.isdigit() and n.isdigit()) or not 1 <= int(k) <= int(n):
        raise argparse.ArgumentTypeError(f"--shard must look like 3-of-8, got '{text}'")
    return int(k), int(n)


@command("demo-data")
def cmd_demo_data(a: argparse.Namespace) -> None:
    from chexdino.demo import make_demo_dataset

    summary = make_demo_dataset(Path(a.outdir), n_studies=a.studies, n_chexpert=a.chexpert,
                                seed=a.seed, n_rsna=a.rsna, n_siim=a.siim,
                                chexpert_per_class=a.chexpert_per_class)
    print(json.dumps(summary, indent=2, default=str))


@command("select-mimic")
def cmd_select_mimic(a: argparse.Namespace) -> None:
    from chexdino.config import SelectConfig
    from chexdino.selection import select_mimic, write_manifest

    manifest, rejects = select_mimic(
        Path(a.split), Path(a.metadata), Path(a.chexpert), Path(a.image_root),
        Path(a.report_root), a.image_suffix, SelectConfig.from_section(_json(a.select)))
    write_manifest(manifest, rejects, Path(a.manifest), Path(a.rejects))
    _write_job_record(a.environment)
    log.info("selected %d images, rejected %d records", len(manifest), len(rejects))


@command("select-chexpert")
def cmd_select_chexpert(a: argparse.Namespace) -> None:
    from chexdino.selection import select_chexpert_test, write_manifest

    manifest, rejects = select_chexpert_test(Path(a.groundtruth), Path(a.image_root))
    write_manifest(manifest, rejects, Path(a.manifest), Path(a.rejects))
    _write_job_record(a.environment)
    log.info("selected %d CheXpert test images", len(manifest))


@command("select-evalset")
def cmd_select_evalset(a: argparse.Namespace) -> None:
    from chexdino import evalsets

    settings = _json(a.settings)
    selection = None
    if a.evalset == "rsna_pneumonia":
        manifest, rejects = evalsets.select_rsna_pneumonia(
            Path(settings["labels_csv"]), Path(settings["image_root"]), *settings["labels"])
    elif a.evalset == "siim_pneumothorax":
        manifest, rejects = evalsets.select_siim_pneumothorax(
            Path(settings["rle_csv"]), Path(settings["image_root"]), *settings["labels"])
    else:
        selection = evalsets.chexpert_5x200_selection(
            Path(settings["train_csv"]), settings["labels"], settings["per_class"],
            settings["seed"])
        manifest, rejects = evalsets.select_chexpert_5x200(
            selection, Path(settings["image_root"]), settings["labels"])
    evalsets.write_tables(manifest, rejects, Path(a.manifest), Path(a.rejects), selection,
                          Path(a.selection) if a.selection else None)
    _write_job_record(a.environment)
    log.info("%s: selected %d images, rejected %d", a.evalset, len(manifest), len(rejects))


@command("accuracy")
def cmd_accuracy(a: argparse.Namespace) -> None:
    from chexdino.config import EvaluateConfig
    from chexdino.evalsets import write_accuracy

    table = write_accuracy(Path(a.probabilities), Path(a.manifest),
                           EvaluateConfig.from_section(_json(a.evaluate)), Path(a.out))
    print(table.to_string(index=False))


@command("images")
def cmd_images(a: argparse.Namespace) -> None:
    from chexdino.config import ImagesConfig
    from chexdino.images import convert_shard

    counts = convert_shard(Path(a.manifest), a.shard, Path(a.out), Path(a.rejects),
                           ImagesConfig.from_section(_json(a.images)), a.threads,
                           _job_environment())
    log.info("shard %d of %d: %s", *a.shard, counts)


@command("gather")
def cmd_gather(a: argparse.Namespace) -> None:
    from chexdino.h5store import gather_rejects, gather_stores

    n = gather_stores([Path(p) for p in a.shards], Path(a.out), _job_environment())
    gather_rejects([Path(p) for p in a.shard_rejects], Path(a.rejects))
    log.info("gathered %d images from %d shards into %s", n, len(a.shards), a.out)


@command("impressions")
def cmd_impressions(a: argparse.Namespace) -> None:
    from chexdino.impressions import write_impressions

    counts = write_impressions(Path(a.split), Path(a.report_root), Path(a.out), Path(a.rejects))
    _write_job_record(a.environment)
    log.info("impressions: %s", json.dumps(counts))


@command("tokens")
def cmd_tokens(a: argparse.Namespace) -> None:
    from chexdino.config import ReportsConfig
    from chexdino.tokens import build_tokens

    counts = build_tokens(Path(a.cxr), Path(a.impressions), Path(a.out),
                          ReportsConfig.from_section(_json(a.reports)), _job_environment())
    log.info("tokens: %s", counts)


@command("train")
def cmd_train(a: argparse.Namespace) -> None:
    from chexdino.cpu_kernels import pin_for_training

    pin_for_training(_json(a.train))  # before the stage modules run any torch kernel
    from chexdino.config import ModelConfig, PromptConfig, TrainConfig
    from chexdino.distributed import launch_command, supervise
    from chexdino.train import RESUME_EXIT_CODE, STOP_RECORD, stopped_at, train

    # Several processes: their launcher (torchrun or srun) runs under this one, which exits
    # 75 when the trainers stopped for a resubmission (torchrun itself would exit 1).
    launch = launch_command(a.nproc, a.nodes, sys.argv[1:], os.environ)
    if launch:
        log.info("starting %d x %d training processes: %s", a.nodes, a.nproc, launch[0])
        (Path(a.out_dir) / STOP_RECORD).unlink(missing_ok=True)
        status = supervise(launch)
        step = stopped_at(Path(a.out_dir))
        if status and step is not None:
            log.warning("the training processes stopped at step %d for a resubmission "
                        "(launcher status %d)", step, status)
            sys.exit(RESUME_EXIT_CODE)
        sys.exit(status)

    result = train(Path(a.cxr), Path(a.tokens), Path(a.out_dir),
                   ModelConfig.from_section(_json(a.model)),
                   TrainConfig.from_section(_json(a.train)),
                   PromptConfig.from_section(_json(a.evaluate)))
    if result is not None:  # the main process's summary; the other processes return None
        log.info("training finished: %s", result)


@command("leakage-check")
def cmd_leakage_check(a: argparse.Namespace) -> None:
    from chexdino.leakage import check_leakage, leakage_text

    others = dict(item.split("=", 1) for item in a.other)
    print(leakage_text(check_leakage(Path(a.manifest), Path(a.out), others)))


@command("embed")
def cmd_embed(a: argparse.Namespace) -> None:
    from chexdino.embeddings import embed_split

    embed_split(Path(a.model), Path(a.cxr), Path(a.out), a.split or None, a.batch_size)


@command("linear-probe")
def cmd_linear_probe(a: argparse.Namespace) -> None:
    from chexdino.config import LinearProbeConfig
    from chexdino.linear_probe import run_linear_probe

    if len(a.names) != len(a.tests):
        raise ChexdinoError(f"--names has {len(a.names)} entries, --tests {len(a.tests)}")
    evaluate = _json(a.evaluate)
    table = run_linear_probe(
        Path(a.train), Path(a.validate), dict(zip(a.names, map(Path, a.tests), strict=True)),
        LinearProbeConfig.from_section(_json(a.linear_probe)), evaluate["labels"],
        evaluate["uncertain"], evaluate["seed"], Path(a.out), Path(a.summary), Path(a.figure),
        {Path(p).parent.name: Path(p) for p in a.zero_shot})
    print(Path(a.summary).read_text())
    log.info("linear probe: %d rows -> %s", len(table), a.out)


@command("plot-training")
def cmd_plot_training(a: argparse.Namespace) -> None:
    from chexdino.plots import plot_training_curves

    plot_training_curves(Path(a.metrics), Path(a.validation), Path(a.out))


@command("evaluate")
def cmd_evaluate(a: argparse.Namespace) -> None:
    from chexdino.cpu_kernels import pin_for_checkpoint

    pin_for_checkpoint(Path(a.model), a.device or None)  # the kernels training ran
    from chexdino.config import EvaluateConfig
    from chexdino.evaluate import evaluate_model

    evaluate_model(Path(a.model), Path(a.cxr), Path(a.out_dir),
                   EvaluateConfig.from_section(_json(a.evaluate)), split=a.split or None,
                   checkpoints_json=Path(a.checkpoints) if a.checkpoints else None,
                   precision=a.precision or None, device=a.device or None)


@command("summarize")
def cmd_summarize(a: argparse.Namespace) -> None:
    from chexdino.config import ReportConfig
    from chexdino.dataset_summary import plot_dataset, summarize_dataset, write_summary

    summary, rejects = summarize_dataset(
        Path(a.manifest), Path(a.select_rejects), Path(a.cxr), Path(a.image_rejects),
        Path(a.impressions), Path(a.report_rejects), Path(a.tokens))
    summary["environment"] = _job_environment()
    write_summary(summary, rejects, Path(a.out), Path(a.rejects))
    report = ReportConfig.from_section(_json(a.report))
    plot_dataset(summary, Path(a.figure), report.sample_images, Path(a.cxr))
    print(json.dumps(summary, indent=2))


@command("run-summary")
def cmd_run_summary(a: argparse.Namespace) -> None:
    from chexdino.run_summary import write_run_summary

    summaries = {Path(p).parent.name: Path(p) for p in a.eval_summaries}
    write_run_summary(Path(a.dataset), Path(a.checkpoints), summaries, _json(a.config),
                      Path(a.out), Path(a.provenance), Path(a.config_out),
                      [Path(p) for p in a.job_records],
                      Path(a.leakage) if a.leakage else None)
    print(Path(a.out).read_text())


@command("scorecard")
def cmd_scorecard(a: argparse.Namespace) -> None:
    from chexdino.scorecard_text import scorecard_text

    print(scorecard_text(Path(a.results)))


@command("predict")
def cmd_predict(a: argparse.Namespace) -> None:
    from chexdino.predict import predict_files, predict_settings

    settings = predict_settings(Path(a.model), a.labels, a.device or None, a.precision or None,
                                a.max_frame_pixels)
    out = Path(a.out)
    rejects = Path(a.rejects) if a.rejects else out.with_name(f"{out.stem}_rejects.csv")
    counts = predict_files(Path(a.model), [Path(f) for f in a.files], settings, out, rejects,
                           batch_size=a.batch_size)
    print(f"{counts['predicted']} films scored -> {out}; {counts['rejected']} rejected -> "
          f"{rejects}")


@command("export")
def cmd_export(a: argparse.Namespace) -> None:
    from chexdino.config import EvaluateConfig, SelectConfig
    from chexdino.export import export_run

    export_run(Path(a.model), Path(a.results), Path(a.out_dir),
               EvaluateConfig.from_section(_json(a.evaluate)),
               SelectConfig.from_section(_json(a.select)), Path(a.landing) if a.landing else None)
    print(f"exported {a.model} -> {a.out_dir} (model.safetensors, open_clip_config.json, "
          "README.md)")


@command("retrieval")
def cmd_retrieval(a: argparse.Namespace) -> None:
    from chexdino.cpu_kernels import pin_for_checkpoint

    pin_for_checkpoint(Path(a.model))  # the kernels training ran
    from chexdino.config import EvaluateConfig
    from chexdino.retrieval import score_retrieval

    score_retrieval(Path(a.model), Path(a.cxr), Path(a.tokens), Path(a.out_dir),
                    EvaluateConfig.from_section(_json(a.evaluate)), a.split)


@command("compare-published")
def cmd_compare_published(a: argparse.Namespace) -> None:
    from chexdino.modelcard import markdown_table
    from chexdino.published import write_comparison

    table = write_comparison(Path(a.auroc), Path(a.summary), Path(a.published), a.eval_set,
                             Path(a.out))
    print(markdown_table(table.drop(columns=["source"])))


@command("compare-models")
def cmd_compare_models(a: argparse.Namespace) -> None:
    from chexdino.modelcard import markdown_table
    from chexdino.published import write_side_by_side

    if len(a.names) != len(a.scorecards):
        raise ChexdinoError(f"--names has {len(a.names)} entries, --scorecards "
                            f"{len(a.scorecards)}: give one name per scorecard folder")
    table = write_side_by_side(dict(zip(a.names, a.scorecards, strict=True)), Path(a.out))
    print(markdown_table(table))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chexdino", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("demo-data", help="write the synthetic MIMIC-CXR demo dataset")
    s.add_argument("outdir")
    s.add_argument("--studies", type=int, default=2000)
    s.add_argument("--chexpert", type=int, default=300)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--rsna", type=int, default=40, help="RSNA Pneumonia films (0: none)")
    s.add_argument("--siim", type=int, default=40, help="SIIM-ACR Pneumothorax films (0: none)")
    s.add_argument("--chexpert-per-class", type=int, default=21,
                   help="single-positive CheXpert train studies per class, for 5x200 (0: none)")

    s = sub.add_parser("select-mimic", help="stage 1: manifest from MIMIC-CXR tables")
    for arg in ("split", "metadata", "chexpert", "image-root", "image-suffix", "report-root",
                "select", "manifest", "rejects"):
        s.add_argument(f"--{arg}", required=True)
    s.add_argument("--environment", help=ENVIRONMENT_HELP)

    s = sub.add_parser("select-chexpert", help="stage 1: manifest from a CheXpert test set")
    for arg in ("groundtruth", "image-root", "manifest", "rejects"):
        s.add_argument(f"--{arg}", required=True)
    s.add_argument("--environment", help=ENVIRONMENT_HELP)

    s = sub.add_parser("select-evalset", help="stage 1: manifest of an extra zero-shot set "
                       "(RSNA Pneumonia, SIIM-ACR Pneumothorax, CheXpert 5x200)")
    s.add_argument("--evalset", required=True,
                   choices=["rsna_pneumonia", "siim_pneumothorax", "chexpert_5x200"])
    for arg in ("settings", "manifest", "rejects"):
        s.add_argument(f"--{arg}", required=True)
    s.add_argument("--selection", default="", help="chexpert_5x200: the drawn Path, class CSV")
    s.add_argument("--environment", help=ENVIRONMENT_HELP)

    s = sub.add_parser("accuracy", help="N-way zero-shot accuracy of a scored 5x200 set")
    for arg in ("probabilities", "manifest", "evaluate", "out"):
        s.add_argument(f"--{arg}", required=True)

    s = sub.add_parser("images", help="stage 2: decode one shard of images into HDF5")
    s.add_argument("--manifest", required=True)
    s.add_argument("--images", required=True, help="the images: section as JSON")
    s.add_argument("--shard", type=parse_shard, default=(1, 1))
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out", required=True)
    s.add_argument("--rejects", required=True)

    s = sub.add_parser("gather", help="stage 2: concatenate shard stores in order")
    s.add_argument("--shards", nargs="+", required=True)
    s.add_argument("--shard-rejects", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--rejects", required=True)

    s = sub.add_parser("impressions", help="stage 3: impression text per study")
    for arg in ("split", "report-root", "out", "rejects"):
        s.add_argument(f"--{arg}", required=True)
    s.add_argument("--environment", help=ENVIRONMENT_HELP)

    s = sub.add_parser("tokens", help="stage 3: CLIP BPE tokens row-aligned with the images")
    for arg in ("cxr", "impressions", "reports", "out"):
        s.add_argument(f"--{arg}", required=True)

    s = sub.add_parser("train", help="stage 4: contrastive training (resumes)")
    for arg in ("cxr", "tokens", "out-dir", "model", "train", "evaluate"):
        s.add_argument(f"--{arg}", required=True)
    s.add_argument("--nproc", type=int, default=1,
                   help="training processes per node (one per GPU); >1 relaunches under "
                        "torchrun (one node) or srun (several)")
    s.add_argument("--nodes", type=int, default=1,
                   help="nodes of the SLURM job to train on (srun, one task per GPU)")

    s = sub.add_parser("leakage-check",
                       help="before training: no training patient in a same-source eval set")
    s.add_argument("--manifest", required=True, help="the MIMIC-CXR manifest (all splits)")
    s.add_argument("--out", required=True, help="the check's record (JSON)")
    s.add_argument("--other", nargs="*", default=[], metavar="NAME=MANIFEST",
                   help="other evaluation sets derived from MIMIC-CXR (manifest CSVs)")

    s = sub.add_parser("embed", help="frozen image embeddings of one split, cached (.npz)")
    for arg in ("model", "cxr", "out"):
        s.add_argument(f"--{arg}", required=True)
    s.add_argument("--split", default="", help="rows of this split (default: all)")
    s.add_argument("--batch-size", type=int, default=256)

    s = sub.add_parser("linear-probe", help="logistic regression per label on embeddings")
    for arg in ("train", "validate", "linear-probe", "evaluate", "out", "summary", "figure"):
        s.add_argument(f"--{arg}", required=True)
    s.add_argument("--tests", nargs="+", required=True, help="test-set embedding files")
    s.add_argument("--names", nargs="+", required=True, help="a name per test set")
    s.add_argument("--zero-shot", nargs="*", default=[],
                   help="zero-shot summary.json per test set (the figure's lines)")

    s = sub.add_parser("plot-training", help="training curves for the report")
    for arg in ("metrics", "validation", "out"):
        s.add_argument(f"--{arg}", required=True)

    s = sub.add_parser("evaluate", help="stage 5: zero-shot AUROC scorecard")
    s.add_argument("--model", required=True,
                   help="a chexdino checkpoint, an exported model folder or any open_clip "
                        "model folder (local files)")
    for arg in ("cxr", "evaluate", "out-dir"):
        s.add_argument(f"--{arg}", required=True)
    s.add_argument("--checkpoints", default="",
                   help="the run's checkpoints.json (for evaluate.ensemble_top_k > 1)")
    s.add_argument("--split", default="")
    s.add_argument("--precision", default="",
                   help="bf16 or fp32 (default: the checkpoint's or export's; other open_clip "
                        "folders: fp32)")
    s.add_argument("--device", default="",
                   help="auto, cpu or cuda (default: the checkpoint's; a folder: auto)")

    s = sub.add_parser("summarize", help="stage 6: dataset accounting and figure")
    for arg in ("manifest", "select-rejects", "cxr", "image-rejects", "impressions",
                "report-rejects", "tokens", "report", "out", "rejects", "figure"):
        s.add_argument(f"--{arg}", required=True)

    s = sub.add_parser("run-summary", help="stage 6: landing-page summary and provenance")
    for arg in ("dataset", "checkpoints", "config", "out", "provenance", "config-out"):
        s.add_argument(f"--{arg}", required=True)
    s.add_argument("--eval-summaries", nargs="+", required=True)
    s.add_argument("--job-records", nargs="*", default=[],
                   help="outputs of the data stages that carry their jobs' environment "
                        "(select/impressions JSON, cxr.h5, tokens.h5)")
    s.add_argument("--leakage", default="", help="the leakage check's record (leakage.json)")

    s = sub.add_parser("scorecard", help="print the AUROC tables of a results folder")
    s.add_argument("results")

    s = sub.add_parser("predict", help="zero-shot probabilities for new films (DICOM/JPG/PNG)")
    s.add_argument("files", nargs="+", metavar="FILE_OR_FOLDER")
    s.add_argument("--model", required=True,
                   help="a chexdino checkpoint (results/train/best.pt), an exported model folder "
                        "(its settings come with it) or any open_clip model folder")
    s.add_argument("--out", required=True, help="predictions CSV")
    s.add_argument("--rejects", default="", help="rejects CSV (default: <out>_rejects.csv)")
    s.add_argument("--labels", nargs="*", default=[],
                   help="labels to score (default: the export's, else config.yaml's "
                        "evaluate.labels)")
    s.add_argument("--device", default="", help="auto, cuda or cpu (default: the model's)")
    s.add_argument("--precision", default="",
                   help="bf16 or fp32 (default: the precision the model was trained at)")
    s.add_argument("--max-frame-pixels", type=int, default=None,
                   help="reject films whose header claims more pixels, unread (default: the "
                        "export's, else config.yaml's images.max_frame_pixels)")
    s.add_argument("--batch-size", type=int, default=64)

    s = sub.add_parser("export", help="an open_clip model folder with a model card")
    s.add_argument("--model", required=True, help="a chexdino checkpoint (results/train/best.pt)")
    s.add_argument("--results", required=True, help="the finished run's results folder")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--landing", default="", help="also write the report's landing-page block")
    s.add_argument("--evaluate", default="{}",
                   help="the evaluate section as JSON (labels and prompts; default config.yaml's)")
    s.add_argument("--select", default="{}",
                   help="the select section as JSON (views and splits the card names)")

    s = sub.add_parser("retrieval", help="image-report retrieval Recall@1/5/10, study level")
    for arg in ("model", "cxr", "tokens", "evaluate", "out-dir"):
        s.add_argument(f"--{arg}", required=True)
    s.add_argument("--split", default="test")

    s = sub.add_parser("compare-published", help="our scorecard beside published AUROCs")
    for arg in ("auroc", "summary", "published", "out"):
        s.add_argument(f"--{arg}", required=True)
    s.add_argument("--eval-set", default="chexpert_test")

    s = sub.add_parser("compare-models", help="AUROC tables of several models, a column each")
    s.add_argument("--names", nargs="+", required=True)
    s.add_argument("--scorecards", nargs="+", required=True, help="evaluation output folders")
    s.add_argument("--out", required=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args) or 0
    except ChexdinoError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
