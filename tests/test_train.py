"""Trainer on CPU with shrunken models: exact resume, signals, retention, NaN guard."""

from __future__ import annotations

import json
import signal
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from chexdino.config import ModelConfig, PromptConfig, TrainConfig
from chexdino.data import batch_indices, to_device
from chexdino.train import RESUME_EXIT_CODE, Trainer


def train_cfg(**over):
    cfg = {"steps": 8, "batch_size": 8, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
           "input_size": 32, "val_every": 4, "ckpt_every": 2, "log_every": 2, "keep_last": 1,
           "keep_best": 1, "precision": "fp32", "device": "cpu", "data_on_device": "host",
           "select_by": "val_auroc", "val_max_images": 16, "seed": 3}
    cfg.update(over)
    return cfg


def make_trainer(store, out_dir, model_cfg, **over) -> Trainer:
    cxr, tokens = store
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Trainer(cxr, tokens, out_dir, ModelConfig.from_section(model_cfg),
                       TrainConfig.from_section(train_cfg(**over)), PromptConfig.from_section())


def final_weights(out_dir):
    return torch.load(out_dir / "best.pt", weights_only=True)


def last_state(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_host_arrays_reach_the_device_unchanged():
    """Batch positions (numpy) and crop maps (torch) keep their values and dtypes."""
    positions = np.array([5, 0, 2**40], dtype=np.int64)
    moved = to_device(positions, torch.device("cpu"))
    assert moved.dtype == torch.int64 and moved.tolist() == positions.tolist()
    theta = torch.randn(4, 2, 3)
    assert torch.equal(to_device(theta, torch.device("cpu")), theta)


def test_batch_order_is_a_pure_function_of_step():
    a = [batch_indices(s, 50, 8, seed=1) for s in range(20)]
    b = [batch_indices(s, 50, 8, seed=1) for s in range(20)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    epoch0 = np.concatenate(a[:6])
    assert len(np.unique(epoch0)) == 48  # no repeats within an epoch (drop_last)
    assert not np.array_equal(a[0], a[6])  # a new permutation each epoch
    with pytest.raises(ValueError, match="larger than"):
        batch_indices(0, 5, 8, seed=0)


def test_resume_after_signal_equals_uninterrupted(tiny_store, tmp_path, tiny_model_cfg):
    full = make_trainer(tiny_store, tmp_path / "full", tiny_model_cfg)
    full.run()
    reference = last_state(full)

    interrupted = make_trainer(tiny_store, tmp_path / "cut", tiny_model_cfg)
    original_step = interrupted.train_step

    def step_then_signal(step):
        loss = original_step(step)
        if step == 2:  # SLURM's USR1 arrives during step 3 (0-based 2)
            interrupted.stop._handle(signal.SIGUSR1, None)
        return loss

    interrupted.train_step = step_then_signal
    with pytest.raises(SystemExit) as exit_info:
        interrupted.run()
    assert exit_info.value.code == RESUME_EXIT_CODE
    saved = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").glob("step_*.pt"))
    assert saved[-1] == "step_0000003.pt"  # checkpointed right after the step it was in

    resumed = make_trainer(tiny_store, tmp_path / "cut", tiny_model_cfg)
    resumed.run()
    assert resumed.step == 8
    for key, value in reference.items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    # The resumed run's logged history matches too.
    full_val = pd.read_csv(tmp_path / "full" / "validation.csv")
    cut_val = pd.read_csv(tmp_path / "cut" / "validation.csv")
    pd.testing.assert_frame_equal(full_val.drop(columns="seconds"),
                                  cut_val.drop(columns="seconds"))


def test_retention_and_best_checkpoint(tiny_store, tmp_path, tiny_model_cfg):
    trainer = make_trainer(tiny_store, tmp_path / "run", tiny_model_cfg, keep_last=1,
                           keep_best=1)
    result = trainer.run()
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    info = json.loads((tmp_path / "run" / "checkpoints.json").read_text())
    assert info["training_path"]["compile"] == "eager"  # compile: auto on a CPU
    assert info["training_path"]["processes"] == 1
    assert info["training_path"]["median_img_per_s"] > 0
    val = pd.read_csv(tmp_path / "run" / "validation.csv")
    assert list(val["step"]) == [4, 8]
    best_step = int(val.loc[val["val_auroc"].idxmax(), "step"])
    assert result["best_step"] == best_step
    assert final_weights(tmp_path / "run")["step"] == best_step
    # last (step 8) + best of the validated ones; steps 2 and 6 are gone
    assert "step_0000008.pt" in ckpts and f"step_{best_step:07d}.pt" in ckpts
    assert len(ckpts) <= 2
    assert info["ranked"][0]["step"] == best_step
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(metrics["step"]) == [2, 4, 6, 8]
    assert (metrics["temperature"] > 0).all() and (metrics["img_per_s"] > 0).all()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_store, tmp_path,
                                                              tiny_model_cfg):
    trainer = make_trainer(tiny_store, tmp_path / "nan", tiny_model_cfg)
    original_step = trainer.train_step

    def poisoned(step):
        loss = original_step(step)
        return loss * float("nan") if step >= 4 else loss

    trainer.train_step = poisoned
    with pytest.raises(FloatingPointError, match="non-finite loss at step 5"):
        trainer.run()
    ckpts = sorted(p.name for p in (tmp_path / "nan" / "checkpoints").glob("step_*.pt"))
    assert ckpts[-1] == "step_0000004.pt"


def test_corrupt_last_checkpoint_falls_back_to_previous(tiny_store, tmp_path, tiny_model_cfg):
    trainer = make_trainer(tiny_store, tmp_path / "c", tiny_model_cfg, steps=4, keep_last=3)
    trainer.run()
    ckpt_dir = tmp_path / "c" / "checkpoints"
    (ckpt_dir / "step_0000004.pt").write_bytes(b"truncated")
    again = make_trainer(tiny_store, tmp_path / "c", tiny_model_cfg, steps=4, keep_last=3)
    again.resume()
    assert again.step == 2


def test_batch_larger_than_training_rows_is_a_clear_error(tiny_store, tmp_path, tiny_model_cfg):
    with pytest.raises(ValueError, match="batch_size 64 is larger than the 39 training rows"):
        make_trainer(tiny_store, tmp_path / "x", tiny_model_cfg, batch_size=64)


def test_checkpoints_from_other_settings_are_not_resumed(tiny_store, tmp_path, tiny_model_cfg):
    make_trainer(tiny_store, tmp_path / "r", tiny_model_cfg, steps=4).run()
    same = make_trainer(tiny_store, tmp_path / "r", tiny_model_cfg, steps=4, keep_last=5)
    same.resume()
    assert same.step == 4  # retention settings may change between stop and resume
    other = make_trainer(tiny_store, tmp_path / "r", tiny_model_cfg, steps=4, lr=0.01)
    other.resume()
    assert other.step == 0
    assert not list((tmp_path / "r" / "checkpoints").glob("step_*.pt"))


def edited_training_code(tmp_path, monkeypatch, module: str, edit) -> dict[str, str]:
    """TRAINING_CODE as chexdino would compute it with ``module``'s source passed through
    ``edit`` (on a copy of the package: the installed source stays as it is)."""
    import shutil

    from chexdino import code_version

    shipped = code_version.PACKAGE_DIR
    copy = tmp_path / f"edited-{len(list(tmp_path.glob('edited-*')))}" / "chexdino"
    shutil.copytree(shipped, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / f"{module}.py"
    path.write_text(edit(path.read_text()))
    monkeypatch.setattr(code_version, "PACKAGE_DIR", copy)
    try:
        return code_version.closure_versions("train")
    finally:
        monkeypatch.setattr(code_version, "PACKAGE_DIR", shipped)


def reword_docstrings(source: str) -> str:
    """A comment added, a docstring reworded, blank lines: nothing that runs."""
    return ("# a comment on top\n\n" + source.replace('"""', '"""Reworded. ', 1)
            + "\n\n# trailing comment\n")


def test_resume_survives_harmless_edits_and_starts_afresh_after_a_real_one(
    tiny_store, tmp_path, tiny_model_cfg, monkeypatch, caplog
):
    """Snakemake reruns training when a module it runs changes behaviour; the trainer resumes
    unless the change is in the trajectory's code (the step, model, data, distribution)."""
    from chexdino import train

    make_trainer(tiny_store, tmp_path / "r", tiny_model_cfg, steps=4).run()
    shipped = dict(train.TRAINING_CODE)
    cases = {
        "docstrings": ("train", reword_docstrings, 4),
        "validation": ("inference", lambda s: s + "\nVALIDATION_NOTE = 1\n", 4),
        "the step": ("train", lambda s: s + "\nSTEP_NOTE = 1\n", 0),
    }
    for name, (module, edit, step) in cases.items():
        versions = edited_training_code(tmp_path, monkeypatch, module, edit)
        assert (versions == shipped) == (name == "docstrings"), name
        monkeypatch.setattr(train, "TRAINING_CODE", versions)
        caplog.clear()
        with caplog.at_level("INFO", logger="chexdino.train"):
            resumed = make_trainer(tiny_store, tmp_path / "r", tiny_model_cfg, steps=4)
            resumed.resume()
        assert resumed.step == step, name
        if name == "validation":
            assert "resuming across an edit of inference.py" in caplog.text
        if name == "the step":
            assert "not resuming" in caplog.text
            assert "training code: train.py changed" in caplog.text
            assert not list((tmp_path / "r" / "checkpoints").glob("step_*.pt"))


def test_checkpoints_without_module_versions_are_not_resumed(tiny_store, tmp_path,
                                                              tiny_model_cfg):
    """A checkpoint written before module versions were recorded belongs to another run."""
    make_trainer(tiny_store, tmp_path / "r", tiny_model_cfg, steps=4).run()
    for path in (tmp_path / "r" / "checkpoints").glob("step_*.pt"):
        torch.save({**torch.load(path, weights_only=True), "code": "0" * 64}, path)
    edited = make_trainer(tiny_store, tmp_path / "r", tiny_model_cfg, steps=4)
    edited.resume()
    assert edited.step == 0


def test_training_code_fingerprint_follows_the_source_of_imported_modules(tmp_path, monkeypatch):
    from chexdino import code_version

    package = tmp_path / "chexdino"
    package.mkdir()
    for name in ("__init__", "a", "b", "c", "cli"):
        (package / f"{name}.py").write_text("")
    (package / "a.py").write_text("from chexdino import b\n\ndef f():\n    import chexdino.c\n")
    (package / "c.py").write_text("from chexdino import LABELS\nimport chexdino.cli\n")
    monkeypatch.setattr(code_version, "PACKAGE_DIR", package)
    assert [p.name for p in code_version.module_closure("a")] == [
        "__init__.py", "a.py", "b.py", "c.py"]  # lazy imports count; cli does not
    before = code_version.code_version("a")
    (package / "c.py").write_text('"""Doc."""\nfrom chexdino import LABELS  # a comment\n\n'
                                  "import chexdino.cli\n")  # changes nothing
    assert code_version.code_version("a") == before
    (package / "c.py").write_text("from chexdino import LABELS\n")  # one import less
    assert code_version.code_version("a") != before
    edited = code_version.code_version("a")
    (package / "cli.py").write_text("x = 1\n")
    assert code_version.code_version("a") == edited  # the dispatcher is not a stage's code
    with pytest.raises(ValueError, match="no module 'missing'"):
        code_version.module_closure("missing")


def test_streaming_bank_reads_the_same_batches_as_resident(tiny_store):
    """The out-of-memory fallback (contiguous HDF5 reads per batch) serves identical pixels."""
    from chexdino.data import ImageBank

    cxr, _ = tiny_store
    rows = np.arange(3, 50, 2)
    host = ImageBank(cxr, rows, torch.device("cpu"), "host")
    stream = ImageBank(cxr, rows, torch.device("cpu"), "stream")
    assert (host.mode, stream.mode) == ("host", "stream")
    positions = np.array([7, 0, 19, 3, 12])
    assert torch.equal(host.batch(positions), stream.batch(positions))
    with h5py.File(cxr) as f:
        assert np.array_equal(stream.batch(positions).numpy(), f["cxr"][()][rows[positions]])


def test_normalisation_is_used_in_training_and_validation_and_recorded(
    tiny_store, tmp_path, tiny_model_cfg
):
    """Same seed, same data: only train.normalize differs, so the validation of the same
    initial weights and the trained weights differ; best.pt records the setting, with the
    input size, precision and device evaluation uses."""
    val_loss = {}
    for normalize in ("clip", "imagenet"):
        settings = {"steps": 2, "val_every": 2, "ckpt_every": 2, "normalize": normalize}
        untrained = make_trainer(tiny_store, tmp_path / f"v-{normalize}", tiny_model_cfg,
                                 **settings)
        val_loss[normalize] = untrained.validate()["val_loss"]
        make_trainer(tiny_store, tmp_path / normalize, tiny_model_cfg, **settings).run()
        best = final_weights(tmp_path / normalize)
        assert best["normalize"] == normalize
        # what evaluation needs travels with the weights (train_cfg: 32 px, fp32, cpu)
        assert (best["input_size"], best["precision"], best["device"]) == (32, "fp32", "cpu")
        step = torch.load(tmp_path / normalize / "checkpoints" / "step_0000002.pt",
                          weights_only=True)
        assert step["normalize"] == step["train_config"]["normalize"] == normalize
    assert val_loss["clip"] != pytest.approx(val_loss["imagenet"], rel=1e-6)
    clip, imagenet = final_weights(tmp_path / "clip"), final_weights(tmp_path / "imagenet")
    assert not torch.equal(clip["model"]["visual_proj.weight"],
                           imagenet["model"]["visual_proj.weight"])


def test_compile_auto_takes_cuda_graphs_on_a_gpu_and_eager_on_a_cpu():
    """The shipped default compiles with CUDA graphs on a GPU and stays eager on a CPU."""
    section = TrainConfig.from_section
    cfg = section()
    assert cfg.compile_mode_on(torch.device("cuda")) == "reduce-overhead"
    assert cfg.compile_mode_on(torch.device("cpu")) is None
    assert section({"compile": True}).compile_mode_on(torch.device("cpu")) == "default"
    assert section({"compile": True, "compile_mode": "max-autotune"}).compile_mode_on(
        torch.device("cuda")) == "max-autotune"
    assert section({"compile": False}).compile_mode_on(torch.device("cuda")) is None


@pytest.mark.slow  # two compiling trainer processes: ~1 min
def test_a_resumed_compiled_run_loads_its_graphs_from_the_run_folder(tiny_store, tmp_path,
                                                                     tiny_model_cfg):
    """Compilation is paid once per run: the job that resumes (a new process, as after a
    SLURM resubmission) loads the compiled graphs from the run's compile_cache folder."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    cxr, tokens = tiny_store
    out = tmp_path / "run"
    cmd = [str(Path(sys.executable).parent / "chexdino"), "train", "--cxr", str(cxr),
           "--tokens", str(tokens), "--out-dir", str(out), "--model", json.dumps(tiny_model_cfg),
           "--train", json.dumps(train_cfg(steps=4, keep_last=2, compile=True)), "--evaluate", "{}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHINDUCTOR")}
    env["OMP_NUM_THREADS"] = "1"
    uses = []
    for _ in range(2):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        info = json.loads((out / "checkpoints.json").read_text())
        uses.append(info["training_path"]["compile_cache"])
        (out / "checkpoints" / "step_0000004.pt").unlink()  # the rerun resumes at step 2
        (out / "best.pt").unlink()
    assert "resumed from" in result.stderr
    assert uses[0]["compiled"] >= 1 and uses[0]["loaded"] == 0, uses
    assert uses[1]["loaded"] >= 1 and uses[1]["compiled"] == 0
    assert any((out / "compile_cache").rglob("*")), "the cache lives in the run folder"


@pytest.mark.slow  # one trainer process: ~15 s
def test_wall_time_signal_reaches_a_trainer_whose_parent_blocked_it(tiny_store, tmp_path,
                                                                    tiny_model_cfg):
    """A blocked signal mask is inherited: a launcher that blocks USR1 must not make the
    trainer deaf to SLURM's warning. The trainer unblocks it, checkpoints and exits 75."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    cxr, tokens = tiny_store
    out = tmp_path / "run"
    cmd = [str(Path(sys.executable).parent / "chexdino"), "train", "--cxr", str(cxr),
           "--tokens", str(tokens), "--out-dir", str(out), "--model", json.dumps(tiny_model_cfg),
           "--train", json.dumps(train_cfg(steps=100_000, log_every=1, ckpt_every=10**6,
                                           val_every=10**6)), "--evaluate", "{}"]
    trainer = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
        preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1}))
    lines = []
    for line in trainer.stderr:
        lines.append(line)
        if " step 3 loss" in line:
            trainer.send_signal(signal.SIGUSR1)
            break
    try:
        _, rest = trainer.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        trainer.kill()
        raise AssertionError("the trainer ignored USR1") from None
    log = "".join(lines) + rest
    assert trainer.returncode == RESUME_EXIT_CODE, log[-2000:]
    assert "SIGUSR1 arrived blocked from the parent process" in log
    assert "received signal 10" in log
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*.pt"))


def test_wall_time_signal_survives_a_library_taking_it_over(tiny_store, tmp_path,
                                                          tiny_model_cfg, monkeypatch):
    """Code below Python (here libc's signal(), as a native library would call it) sets
    USR1 to be ignored after training started; Python still reports its own handler. The
    trainer re-installs its handlers at the next log window, so the warning still stops it."""
    import ctypes
    import os

    libc = ctypes.CDLL(None)
    trainer = make_trainer(tiny_store, tmp_path / "run", tiny_model_cfg, steps=40,
                           log_every=2, ckpt_every=100, val_every=100)
    step = trainer.train_step

    def takeover_then_signal(n: int):
        if n == 1:
            libc.signal(signal.SIGUSR1, ctypes.c_void_p(1))  # SIG_IGN, unseen by Python
        if n == 5:
            os.kill(os.getpid(), signal.SIGUSR1)
        return step(n)

    monkeypatch.setattr(trainer, "train_step", takeover_then_signal)
    try:
        with pytest.raises(SystemExit) as stopped:
            trainer.run()
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert stopped.value.code == RESUME_EXIT_CODE
    assert trainer.step == 6
    assert (tmp_path / "run" / "checkpoints" / "step_0000006.pt").exists()
