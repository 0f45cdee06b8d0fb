"""Stage 4: step-based contrastive training, resumable exactly, safe under SLURM's wall time.

State that decides the trajectory is either in the checkpoint (weights, optimiser, step,
history) or a pure function of ``(seed, step)`` (batch order, augmentation draws, learning
rate), so a run stopped anywhere and restarted from its last checkpoint continues the same run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from chexdino import __version__, h5store
from chexdino.atomic import atomic_output
from chexdino.code_version import closure_versions
from chexdino.config import ModelConfig, PromptConfig, TrainConfig
from chexdino.data import ImageBank, batch_indices, step_generator, to_device
from chexdino.device import autocast, pick_device
from chexdino.distributed import (
    DataParallelOptions,
    FlatGradientMean,
    any_rank,
    barrier,
    gather_rows,
    gather_with_grad,
    init_world,
    local_slice,
    rank_share,
    shutdown,
    wrap_data_parallel,
)
from chexdino.inference import embed_images, validation_auroc
from chexdino.model import ChexDino, build_model, contrastive_loss
from chexdino.provenance import environment
from chexdino.tokens import read_tokens
from chexdino.transforms import AugmentConfig, apply_augment, augment_params

log = logging.getLogger(__name__)
TRAJECTORY_MODULES: tuple[str, ...] = ("train", "model", "data", "transforms", "distributed",
                                       "device")
"""The modules that decide the weights' trajectory: the step, the optimiser, the model, the
batches and their augmentation, how processes share the work. Resuming across a change of
their behaviour would splice two different runs, so such checkpoints are not resumed; an edit
elsewhere (validation, logging helpers, other stages) or a comment anywhere resumes."""

TRAINING_CODE: dict[str, str] = closure_versions("train")
"""The version of every module training runs (:mod:`chexdino.code_version`: comments and
docstrings do not count), recorded in each checkpoint."""

RESUME_SAFE_KEYS = frozenset({"keep_last", "keep_best", "log_every", "data_on_device",
                              "compile", "compile_mode", "device"})
"""Settings that may change between a stop and its resume without changing the run."""

VALIDATION_BATCH = 512
"""Images (and texts) per forward pass in validation: no gradients, so large batches fit."""

RESUME_EXIT_CODE = 75
"""Exit status after a checkpoint written on SIGUSR1/SIGTERM: "rerun me to resume" (EX_TEMPFAIL)."""

STOP_RECORD = "stopped.json"
"""Written to the run folder by the main process when it stops for a resubmission: the
launcher of several processes (torchrun exits 1 whatever its workers' status) reads it to
exit 75 itself."""


def stopped_at(out_dir: Path) -> int | None:
    """The step at which the last run in ``out_dir`` stopped for a resubmission, if it did."""
    record = Path(out_dir) / STOP_RECORD
    if not record.exists():
        return None
    return int(json.loads(record.read_text())["step"])


def augment_config(cfg: TrainConfig) -> AugmentConfig:
    """The training augmentation the ``train:`` section asks for."""
    return AugmentConfig(cfg.input_size, tuple(cfg.crop_scale), hflip=cfg.hflip,
                         normalize=cfg.normalize)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then constant or cosine decay; a pure function of the step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        done = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * done))
    return cfg.lr


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the spec) or AdamW (the demo's from-scratch setting).

    On a GPU the fused implementations run the whole update in a few kernels.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    fused = params[0].is_cuda
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, fused=fused or None)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 fused=fused or None)
    raise ValueError(f"train.optimizer: '{cfg.optimizer}' is not sgd or adamw")


class StopRequest:
    """Turns SLURM's pre-timeout signal (USR1) or a TERM into a flag read between steps."""

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: int | None = None

    def install(self) -> None:
        """Catch the signals; called again at every log window. In GPU runs on H200s the
        trainer's USR1 showed as caught yet never reached this handler (TERM did): code
        below Python had taken it over after start-up. A launcher may also pass the signals
        on blocked. Either way SLURM's warning would be swallowed."""
        for sig in self.SIGNALS:
            signal.signal(sig, self._handle)  # Python cannot see a C-level takeover: always
        blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, self.SIGNALS)
        inherited = sorted(signal.Signals(s).name for s in blocked if s in self.SIGNALS)
        if inherited:  # a blocked mask is inherited from the parent process
            log.warning("%s arrived blocked from the parent process; unblocked so that "
                        "the wall-time warning reaches training", ", ".join(inherited))

    def _handle(self, signum: int, _frame: Any) -> None:
        log.warning("received signal %d: checkpointing after this step", signum)
        self.signal = signum


@dataclass
class SplitData:
    """Images (a bank), tokens and labels of one split, ready for the loop."""

    bank: ImageBank
    tokens: torch.Tensor
    labels: pd.DataFrame


def load_split(cxr_h5: Path, tokens_h5: Path, split: str, device: torch.device, mode: str,
               max_rows: int | None = None) -> SplitData:
    """Rows of ``split`` that have both an image and a tokenised impression."""
    meta = h5store.read_meta(cxr_h5)
    tokens, has_text = read_tokens(tokens_h5)
    rows = np.flatnonzero((meta["split"] == split).to_numpy() & has_text)
    if max_rows is not None:
        rows = rows[:max_rows]
    bank = ImageBank(cxr_h5, rows, device, mode)
    return SplitData(bank, torch.from_numpy(tokens[rows]).long().to(device),
                     meta.iloc[rows].reset_index(drop=True))


class Trainer:
    """One training run writing into ``out_dir``; ``run()`` resumes from its last checkpoint."""

    def __init__(self, cxr_h5: Path, tokens_h5: Path, out_dir: Path, model_cfg: ModelConfig,
                 train_cfg: TrainConfig, prompts: PromptConfig,
                 parallel: DataParallelOptions | None = None):
        self.cfg = train_cfg
        self.model_cfg = model_cfg
        self.prompts = prompts
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.world, self.device = init_world(pick_device(self.cfg.device))
        self.rows = local_slice(self.world, self.cfg.batch_size)
        log.info("training process %d of %d on %s", self.world.rank + 1, self.world.size,
                 self.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.store_size = h5store.stored_size(cxr_h5)
        self.train = load_split(cxr_h5, tokens_h5, "train", self.device, self.cfg.data_on_device)
        # Validation films stay where the training films are (on the GPU when they fit).
        self.val = load_split(cxr_h5, tokens_h5, "validate", self.device,
                              self.cfg.data_on_device, self.cfg.val_max_images)
        if len(self.train.bank) < self.cfg.batch_size:
            raise ValueError(f"train.batch_size {self.cfg.batch_size} is larger than the "
                             f"{len(self.train.bank)} training rows with image and text")
        torch.manual_seed(self.cfg.seed)
        self.model: ChexDino = build_model(self.model_cfg).to(self.device)
        self.parallel = parallel or DataParallelOptions()
        self.forward_model = wrap_data_parallel(self.model, self.world, self.device,
                                                self.parallel)
        self.average_gradients = (FlatGradientMean(self.model, self.world)
                                  if self.world.distributed and self.parallel.strategy == "flat"
                                  else None)
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.compile_mode = self.cfg.compile_mode_on(self.device)
        if self.compile_mode:
            log.info("compiled graphs are cached in %s",
                     keep_compile_cache(self.out_dir / "compile_cache"))
        log.info("training path: %s, %s, %d process(es)",
                 f"torch.compile {self.compile_mode}" if self.compile_mode else "eager",
                 self.cfg.precision, self.world.size)
        self.step_fn = self._make_step_fn()
        self.step = 0
        self.log_rows: list[dict[str, Any]] = []
        self.val_rows: list[dict[str, Any]] = []
        self.stop = StopRequest()
        self._compile_reported = False  # logged once per process, after the first window
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: list[Future] = []

    # ---- one optimisation step -------------------------------------------------------
    def _make_step_fn(self):
        size = self.cfg.input_size

        def forward_loss(images: torch.Tensor, theta: torch.Tensor,
                         tokens: torch.Tensor) -> torch.Tensor:
            """Augment (uint8 in, so CUDA graphs copy 1 byte per pixel), encode, score."""
            x = apply_augment(images, theta, size, self.cfg.normalize)
            with autocast(self.device, self.cfg.precision):
                img, txt, scale = self.forward_model(x, tokens)
            # Every rank scores the full global batch (features gathered with gradients).
            functional = self.parallel.functional_gather
            img = gather_with_grad(img, self.world, functional)
            txt = gather_with_grad(txt, self.world, functional)
            return contrastive_loss(img, txt, scale)

        if self.compile_mode is None:
            return forward_loss
        return torch.compile(forward_loss, mode=self.compile_mode)

    def train_step(self, step: int) -> torch.Tensor:
        """One step at ``step``: batch, augmentation and lr are all functions of the step."""
        positions = batch_indices(step, len(self.train.bank), self.cfg.batch_size, self.cfg.seed)
        # Augmentation is drawn for the whole global batch, then each rank takes its rows:
        # N processes see exactly the pixels one process would.
        theta = augment_params(len(positions), *self.train.bank.image_shape,
                               augment_config(self.cfg),
                               step_generator(self.cfg.seed, step))[self.rows]
        positions = positions[self.rows]
        images = self.train.bank.batch(positions)
        tokens = self.train.tokens[to_device(positions, self.device)]
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.cfg, step)
        loss = self.step_fn(images, to_device(theta, self.device), tokens)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.average_gradients is not None:
            self.average_gradients()
        self.optimizer.step()
        self.model.clamp_logit_scale()
        return loss.detach().clone()  # CUDA-graph outputs are reused by the next step

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train to ``cfg.steps`` (resuming if a checkpoint exists); returns the final summary."""
        self.resume()
        if self.world.is_main:
            (self.out_dir / STOP_RECORD).unlink(missing_ok=True)
        barrier(self.world)
        self.stop.install()
        self.model.train()
        window: list[torch.Tensor] = []
        tick, tick_step = time.perf_counter(), self.step
        while self.step < self.cfg.steps:
            window.append(self.train_step(self.step))
            self.step += 1
            at_log = self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps
            if at_log:
                self._log(window, tick, tick_step)
                window, tick, tick_step = [], time.perf_counter(), self.step
                self.stop.install()
            stopping = self._stop_agreed(at_log)
            if self.step % self.cfg.val_every == 0 or self.step == self.cfg.steps:
                self.validate()
            if self.step % self.cfg.ckpt_every == 0 or self.step == self.cfg.steps or stopping:
                if window:
                    self._log(window, tick, tick_step)
                    window, tick, tick_step = [], time.perf_counter(), self.step
                self.on_main(self.save_checkpoint,
                             background=self._can_write_behind() and not stopping)
            if stopping and self.step < self.cfg.steps:
                log.warning("stopping at step %d for a resubmission", self.step)
                self.on_main(self._record_stop)
                shutdown(self.world)
                raise SystemExit(RESUME_EXIT_CODE)
        result = self.on_main(self.finish)
        shutdown(self.world)
        return result

    def on_main(self, func, *args, **kwargs) -> Any:
        """Run ``func`` on the main process only (validation, files); the others wait."""
        result = func(*args, **kwargs) if self.world.is_main else None
        barrier(self.world)
        return result

    def _record_stop(self) -> None:
        """Wait for the checkpoint, then say so in the run folder (``stopped_at``)."""
        self.wait_for_checkpoint()
        with atomic_output(self.out_dir / STOP_RECORD) as tmp:
            Path(tmp).write_text(json.dumps({"step": self.step, "signal": self.stop.signal}))

    def _stop_agreed(self, at_log: bool) -> bool:
        """Whether to checkpoint and stop now. One process checks every step; several agree
        at logging boundaries (one collective per window), so all stop at the same step."""
        if not self.world.distributed:
            return self.stop.signal is not None
        return at_log and any_rank(self.stop.signal is not None, self.world, self.device)

    def _log(self, window: list[torch.Tensor], tick: float, tick_step: int) -> None:
        losses = torch.stack(window).float().cpu().numpy()  # the one host sync per log window
        if not np.isfinite(losses).all():
            raise FloatingPointError(
                f"non-finite loss at step {tick_step + int(np.argmin(np.isfinite(losses))) + 1}; "
                f"the last good checkpoint in {self.ckpt_dir} is kept (lower train.lr?)")
        seconds = time.perf_counter() - tick
        row = {
            "step": self.step,
            "loss": float(losses.mean()),
            "lr": learning_rate(self.cfg, self.step - 1),
            "temperature": float(1.0 / self.model.logit_scale.exp().item()),
            "img_per_s": (self.step - tick_step) * self.cfg.batch_size / max(seconds, 1e-9),
            "gpu_mem_gb": (torch.cuda.max_memory_allocated(self.device) / 2**30
                           if self.device.type == "cuda" else 0.0),
        }
        self.log_rows.append(row)
        if self.world.is_main and self.compile_mode and not self._compile_reported:
            log.info("torch.compile: %s", compile_cache_use())
            self._compile_reported = True
        if self.world.is_main:
            log.info("step %(step)d loss %(loss).4f lr %(lr).2e T %(temperature).4f "
                     "%(img_per_s).0f img/s", row)

    @torch.no_grad()
    def validate(self) -> dict[str, Any] | None:
        """Contrastive loss on the validation split, plus zero-shot AUROC when it has labels.

        Every process embeds its share of the images and texts (N GPUs take 1/N of the pass);
        the main process scores them, records the row and writes ``best.pt``.
        """
        started = time.perf_counter()
        try:
            img, txt = self._validation_embeddings()
        finally:
            self.model.train()
        if not self.world.is_main:
            return None
        val_loss = val_auroc = float("nan")
        if img is not None:
            bs, n = self.cfg.batch_size, len(img)
            scale = self.model.logit_scale.exp().float()
            losses = [contrastive_loss(img[s:s + bs], txt[s:s + bs], scale)
                      for s in range(0, n - bs + 1, bs)]
            val_loss = torch.stack(losses).mean().item() if losses else float("nan")
            val_auroc = validation_auroc(self.model, img, self.val.labels, self.prompts,
                                         self.device, self.cfg.precision)
            self.model.train()
        row = {"step": self.step, "val_loss": val_loss, "val_auroc": val_auroc,
               "seconds": time.perf_counter() - started}
        self.val_rows.append(row)
        log.info("validation at step %(step)d: loss %(val_loss).4f, zero-shot mean AUROC "
                 "%(val_auroc).4f (%(seconds).2f s)", row)
        if self._is_best(row):
            best = self.ckpt_dir / "best.pt"
            self._write(self._weights_payload(row), lambda payload: self._atomic_save(
                payload, best), background=self._can_write_behind())
        return row

    def _validation_embeddings(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Image and text embeddings of every validation row, in row order, on every process;
        each process computes its ``rank_share``. Image embeddings serve both the loss and
        the AUROC."""
        n = len(self.val.bank)
        if not n:
            return None, None
        mine = rank_share(n, self.world)
        img = embed_images(self.model, self.val.bank.batch(mine), self.cfg.input_size,
                           self.device, VALIDATION_BATCH, self.cfg.precision, self.cfg.normalize)
        tokens = self.val.tokens[torch.from_numpy(mine).to(self.device)]
        txt = [self._embed_tokens(tokens[s:s + VALIDATION_BATCH])
               for s in range(0, len(mine), VALIDATION_BATCH)]
        txt = torch.cat(txt) if txt else img.new_zeros((0, img.shape[1]))
        return gather_rows(img, self.world, n), gather_rows(txt, self.world, n)

    def _can_write_behind(self) -> bool:
        """Files may be written while training continues (a GPU run not at its last step)."""
        return self.device.type == "cuda" and self.step < self.cfg.steps

    def _embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.cfg.precision):
            return self.model.encode_text(tokens).float()

    def _metric(self, row: dict[str, Any]) -> float:
        value = row.get(self.cfg.select_by, float("nan"))
        if value is None or not np.isfinite(value):
            return -math.inf
        return value if self.cfg.higher_is_better else -value

    def _is_best(self, row: dict[str, Any]) -> bool:
        earlier = [self._metric(r) for r in self.val_rows[:-1]]
        return not earlier or self._metric(row) > max(earlier)

    # ---- checkpoints --------------------------------------------------------------------
    def _weights_payload(self, val: dict[str, Any] | None) -> dict[str, Any]:
        return {"step": self.step, "model": self.model.state_dict(),
                "model_config": self.model_cfg.to_dict(), "val": val or {},
                "normalize": self.cfg.normalize, "chexdino_version": __version__,
                "store_size": self.store_size, "prompts": self.prompts.to_dict(),
                "train_config": asdict(self.cfg), **evaluation_settings(self.cfg)}

    def save_checkpoint(self, background: bool = False) -> Path:
        """Full resumable state to ``step_XXXXXXX.pt`` (atomic), then apply retention.

        With ``background`` the state is copied to pinned host memory behind the step on the
        GPU's stream and written by a thread while training continues (a full-size checkpoint
        is ~1.2 GB); the end of the run and a signal-triggered exit wait for it.
        """
        payload = self._weights_payload(self.val_rows[-1] if self.val_rows else None)
        payload.update({
            "optimizer": self.optimizer.state_dict(),
            "code": TRAINING_CODE,
            "log_rows": list(self.log_rows),
            "val_rows": list(self.val_rows),
        })
        path = self.ckpt_dir / f"step_{self.step:07d}.pt"

        def write(host_payload: dict[str, Any]) -> None:
            self._atomic_save(host_payload, path)
            self._apply_retention()
            self.write_tables()

        self._write(payload, write, background)
        return path

    def _write(self, payload: dict[str, Any], write, background: bool) -> None:
        """``write(payload)`` now, or from a copy in host memory on the writer thread.

        The copy is queued on the GPU's stream, so later steps update the weights only after
        it; the host does not wait for it. Writes run one at a time, in order.
        """
        if not background:
            self.wait_for_checkpoint()  # keep writes in order
            write(payload)
            return
        host, copied = _host_copy(payload, self.device)

        def job() -> None:
            copied.synchronize()
            write(host)

        self._pending.append(self._writer.submit(job))

    def wait_for_checkpoint(self) -> None:
        """Block until background checkpoint writes are done; re-raise their error, if any."""
        pending, self._pending = self._pending, []
        for future in pending:
            error = future.exception()
            if error is not None:
                raise RuntimeError(f"writing a checkpoint in {self.ckpt_dir} failed") from error

    @staticmethod
    def _atomic_save(payload: dict[str, Any], path: Path) -> None:
        with atomic_output(path) as tmp:
            torch.save(payload, tmp)

    def _step_checkpoints(self) -> list[Path]:
        return sorted(self.ckpt_dir.glob("step_*.pt"))

    def _ranked(self) -> list[dict[str, Any]]:
        """Retained step checkpoints with a validation at their step, best first."""
        by_step = {r["step"]: r for r in self.val_rows}
        ranked = []
        for path in self._step_checkpoints():
            step = int(path.stem.split("_")[1])
            if step in by_step:
                ranked.append({"path": str(path), "step": step,
                               "metric": self._metric(by_step[step])})
        return sorted(ranked, key=lambda c: (-c["metric"], -c["step"]))

    def _apply_retention(self) -> None:
        """Keep the last ``keep_last`` and the best ``keep_best`` step checkpoints."""
        paths = self._step_checkpoints()
        keep = {str(p) for p in paths[-self.cfg.keep_last:]} if self.cfg.keep_last else set()
        keep |= {c["path"] for c in self._ranked()[:self.cfg.keep_best]}
        keep.add(str(paths[-1]))  # the newest is always kept: it is the resume point
        for path in paths:
            if str(path) not in keep:
                path.unlink()

    def resume(self) -> None:
        """Load the newest readable step checkpoint, if any (a corrupt one is reported, skipped).

        Checkpoints written under other settings or by other training code (Snakemake reruns
        training when a setting or a module it runs changes) belong to another run: they are
        deleted, with a warning, and training starts from step 0.
        """
        for path in reversed(self._step_checkpoints()):
            try:
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # fall back to the previous good one
                log.error("checkpoint %s is unreadable (%s); trying the previous one", path, exc)
                continue
            changed = self._changed_settings(ckpt)
            if changed and not self.world.is_main:
                return  # the main process deletes them; this one starts fresh too
            if changed:
                log.warning("not resuming: checkpoints in %s were written with other settings "
                            "or code (%s); deleting them and starting a new run",
                            self.ckpt_dir, "; ".join(changed))
                for stale in [*self._step_checkpoints(), self.ckpt_dir / "best.pt"]:
                    stale.unlink(missing_ok=True)
                return
            other = changed_modules(ckpt.get("code"))
            if other:
                log.info("resuming across an edit of %s: the trajectory's code (%s) is "
                         "unchanged; validation rows before step %d came from the earlier code",
                         ", ".join(other), ", ".join(TRAJECTORY_MODULES), int(ckpt["step"]))
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.step = int(ckpt["step"])
            self.log_rows = list(ckpt["log_rows"])
            self.val_rows = list(ckpt["val_rows"])
            log.info("resumed from %s at step %d", path, self.step)
            return

    def _changed_settings(self, ckpt: dict[str, Any]) -> list[str]:
        """Settings that differ from the checkpoint's and would change the trajectory."""
        saved, now = ckpt.get("train_config", {}), asdict(self.cfg)
        changed = [k for k in now if k not in RESUME_SAFE_KEYS and saved.get(k) != now[k]]
        if ckpt.get("model_config") != self.model_cfg.to_dict():
            changed.append("model")
        changed += changed_trajectory_code(ckpt.get("code"))
        return changed

    def write_tables(self, best_step: int | None = None) -> None:
        """metrics.csv (per log window), validation.csv and checkpoints.json.

        checkpoints.json also records the steps trained and the environment of the job that
        wrote it (versions, source revision, GPU) for the report's provenance table.
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(self.log_rows, columns=["step", "loss", "lr", "temperature", "img_per_s",
                                             "gpu_mem_gb"]).to_csv(
            self.out_dir / "metrics.csv", index=False)
        pd.DataFrame(self.val_rows, columns=["step", "val_loss", "val_auroc", "seconds"]).to_csv(
            self.out_dir / "validation.csv", index=False)
        info = {"select_by": self.cfg.select_by, "best": str(self.ckpt_dir / "best.pt"),
                "ranked": self._ranked(), "steps": self.step, "best_step": best_step,
                "world_size": self.world.size, "training_path": self.training_path(),
                "environment": environment(self.device)}
        (self.out_dir / "checkpoints.json").write_text(json.dumps(info, indent=2))

    def training_path(self) -> dict[str, Any]:
        """How the steps ran (compiled or eager, precision, processes) and their median speed."""
        speeds = [r["img_per_s"] for r in self.log_rows[1:]]  # the first window compiles
        return {"compile": self.compile_mode or "eager", "precision": self.cfg.precision,
                "processes": self.world.size, "device": str(self.device),
                "cpu_isa": self.cfg.cpu_isa, "cpu_threads": self.cfg.cpu_threads,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "median_img_per_s": float(np.median(speeds)) if speeds else None,
                "compile_cache": compile_cache_use() if self.compile_mode else None}

    def finish(self) -> dict[str, Any]:
        """Copy the best weights to ``best.pt`` (the rule's output) and write the tables."""
        self.wait_for_checkpoint()
        best = torch.load(self.ckpt_dir / "best.pt", map_location="cpu", weights_only=True)
        self._atomic_save(best, self.out_dir / "best.pt")
        self.write_tables(best_step=best["step"])
        return {"steps": self.step, "best_step": best["step"], "best_val": best["val"]}


def keep_compile_cache(folder: Path) -> Path:
    """Keep torch.compile's on-disk caches with the run, unless ``TORCHINDUCTOR_CACHE_DIR``
    is set: a job resumed on any node that sees the results folder then loads the compiled
    graphs instead of compiling them again (PyTorch's default is the node's own /tmp)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    # PyTorch writes its default into the variable the first time it looks, so that value
    # counts as unset.
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen is None or os.path.abspath(chosen) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(folder).absolute())
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def compile_cache_use() -> dict[str, int]:
    """How many of this process's compiled graphs were loaded from the cache and how many
    were compiled (forward + backward pairs: PyTorch's AOTAutograd cache counters)."""
    from torch._dynamo.utils import counters

    found = counters["aot_autograd"]
    return {"loaded": int(found["autograd_cache_hit"]),
            "compiled": int(found["autograd_cache_miss"] + found["autograd_cache_bypass"])}


def _host_copy(payload: Any, device: torch.device) -> tuple[Any, torch.cuda.Event]:
    """Deep copy of a checkpoint payload into pinned host memory, queued on the GPU's stream.

    Returns the copy and an event that completes when every byte has arrived. Pinned blocks
    are cached by PyTorch, so after the first checkpoint no new host memory is registered.
    """

    def copy(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            host = torch.empty(obj.shape, dtype=obj.dtype, pin_memory=True)
            return host.copy_(obj.detach(), non_blocking=True)
        if isinstance(obj, dict):
            return {k: copy(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return type(obj)(copy(v) for v in obj)
        return obj

    host = copy(payload)
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(device))
    return host, done


def changed_modules(recorded: Any) -> list[str]:
    """Modules whose behaviour differs from a checkpoint's record (``code``), by file name."""
    if not isinstance(recorded, dict):
        return []  # an older checkpoint: changed_trajectory_code refuses it
    return [f"{name}.py" for name in sorted(set(recorded) | set(TRAINING_CODE))
            if recorded.get(name) != TRAINING_CODE.get(name)]


def changed_trajectory_code(recorded: Any) -> list[str]:
    """Why a checkpoint's trajectory code differs from this one's (empty: it does not)."""
    if not isinstance(recorded, dict):
        return ["training code (written by an older chexdino, without module versions)"]
    edited = [f"{name}.py" for name in TRAJECTORY_MODULES
              if recorded.get(name) != TRAINING_CODE.get(name)]
    return [f"training code: {', '.join(edited)} changed"] if edited else []


def evaluation_settings(cfg: TrainConfig) -> dict[str, Any]:
    """What scoring a checkpoint needs from training, recorded in every checkpoint so that
    evaluation reads the model file, not the ``train:`` section."""
    return {"input_size": cfg.input_size, "precision": cfg.precision, "device": cfg.device,
            "cpu_isa": cfg.cpu_isa, "cpu_threads": cfg.cpu_threads}


def train(cxr_h5: Path, tokens_h5: Path, out_dir: Path, model_cfg: ModelConfig,
          train_cfg: TrainConfig, prompts: PromptConfig) -> dict[str, Any]:
    """Run (or resume) training; see :class:`Trainer`."""
    return Trainer(cxr_h5, tokens_h5, out_dir, model_cfg, train_cfg, prompts).run()
