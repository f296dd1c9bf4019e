"""The training loop on the real lite_medsam weights and tiny datasets cut from the shipped scans: it learns,
checkpoints, resumes bit for bit, runs under torchrun (2 CPU processes, gloo), and fails cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from gmiseg_edge.adapters import AdapterError, apply_adapter, load_adapter, save_adapter  # noqa: E402
from gmiseg_edge.cli import app  # noqa: E402
from gmiseg_edge.data import load_sample_cases  # noqa: E402
from gmiseg_edge.models.build import build_model, checkpoint_sha256  # noqa: E402
from gmiseg_edge.models.zoo import get_spec  # noqa: E402
from gmiseg_edge.train import (  # noqa: E402
    AugmentConfig,
    Callback,
    CheckpointError,
    PromptConfig,
    PromptedSam,
    StepInfo,
    TrainConfig,
    checkpoint_path,
    load_samples,
    make_example,
    segmentation_loss,
    train,
)
from tests.conftest import REPO, require_weights  # noqa: E402

pytestmark = [pytest.mark.weights, pytest.mark.slow]
MODEL = "lite_medsam"


def write_pngs(root: Path, cases) -> Path:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(cases):
        cv2.imwrite(str(root / "images" / f"case{i}.png"), case.image)
        cv2.imwrite(str(root / "masks" / f"case{i}.png"), case.mask.astype(np.uint8))
    return root


@pytest.fixture(scope="module", autouse=True)
def fixed_threads():
    """Two intra-op threads at most, the same in every run of the module (the resume test compares runs bit for bit):
    CI's 2 cores train 1.4x faster than with one (this module 143 s -> 102 s, idle). On a 2-core machine shared with
    other jobs, two threads can slow down 2-5x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> tuple[Path, Path]:
    """2 training slices and 1 validation slice of the lung2 lesion."""
    require_weights(MODEL)
    cases = load_sample_cases(["lung2"], slices="all")
    root = tmp_path_factory.mktemp("data")
    return write_pngs(root / "train", [cases[2], cases[8]]), write_pngs(root / "val", [cases[6]])


def config(datasets: tuple[Path, Path], out: Path, **overrides) -> TrainConfig:
    data, val = datasets
    settings = dict(data=data, val=val, out=out, epochs=2, batch_size=1, seed=3, patience=1, device="cpu")
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def reference(datasets, tmp_path_factory):
    """An uninterrupted 2-epoch run (2 steps per epoch) with validation."""
    out = tmp_path_factory.mktemp("reference") / "adapter.safetensors"
    return train(config(datasets, out))


def test_run_writes_adapter_checkpoint_and_history(reference):
    assert reference.out.is_file() and reference.checkpoint == checkpoint_path(reference.out)
    adapter, tensors, metadata = load_adapter(reference.out)
    assert adapter.kind == "loose_lora" and adapter.rank == 4
    assert metadata["base_model"] == MODEL and metadata["base_sha256"] == checkpoint_sha256(MODEL)
    assert reference.counts.trainable == reference.counts.adapter == sum(t.numel() for t in tensors.values())
    assert [r.epoch for r in reference.history] == [1, 2]
    assert all(0.0 <= r.val_dice <= 1.0 for r in reference.history)
    state = torch.load(reference.checkpoint, weights_only=True)
    assert state["epoch"] == 2 and len(state["optimizer"]["state"]) == len(tensors)
    # early stopping keeps the best epoch's adapter (patience 1: a worse epoch 2 stops the run)
    best = max(reference.history, key=lambda r: r.val_dice)
    assert reference.best_epoch == best.epoch and reference.best_dice == best.val_dice
    assert reference.stopped_early == (reference.history[1].val_dice <= reference.history[0].val_dice)
    for key, value in tensors.items():
        assert torch.equal(value, state["best_adapter"][key])


def test_training_reduces_the_loss_on_its_own_data(reference, datasets):
    spec = get_spec(MODEL)
    samples = load_samples(datasets[0])
    examples = [
        make_example(samples[i], spec.preprocess, np.random.default_rng(seed), AugmentConfig(), PromptConfig(mode=mode))
        for i, (seed, mode) in enumerate([(1, "box"), (2, "points")])
    ]
    assert {e.prompt.kind for e in examples} == {"box", "points"}
    images = torch.from_numpy(np.stack([e.image for e in examples]))
    targets = torch.from_numpy(np.stack([e.target for e in examples]))
    base = build_model(MODEL)
    adapted = build_model(MODEL)
    apply_adapter(adapted, reference.out, MODEL, checkpoint_sha256(MODEL))
    with torch.no_grad():
        losses = [
            segmentation_loss(PromptedSam(m)(images, [e.prompt for e in examples]), targets).item()
            for m in (base, adapted)
        ]
    assert losses[1] < losses[0], losses


class StopAt(Callback):
    """Raises after the given step of the given epoch (simulating a crash mid-epoch)."""

    def __init__(self, epoch: int, step: int) -> None:
        self.at = (epoch, step)

    def on_step(self, step: StepInfo) -> None:
        if (step.epoch, step.step) == self.at:
            raise KeyboardInterrupt("simulated crash")


def test_resume_after_a_crash_mid_epoch_is_bit_identical(reference, datasets, tmp_path):
    out = tmp_path / "adapter.safetensors"
    out.write_bytes(b"an older adapter")
    with pytest.raises(KeyboardInterrupt):
        train(config(datasets, out), [StopAt(epoch=2, step=1)])
    assert out.read_bytes() == b"an older adapter"  # a failed run never clobbers the output
    assert torch.load(checkpoint_path(out), weights_only=True)["epoch"] == 1
    resumed = train(config(datasets, out, resume=True))
    assert resumed.resumed_from == 1 and [r.epoch for r in resumed.history] == [1, 2]
    _, tensors, _ = load_adapter(out)
    _, expected, _ = load_adapter(reference.out)
    assert tensors.keys() == expected.keys()
    assert all(torch.equal(tensors[k], expected[k]) for k in expected)
    assert load_adapter(out)[2] == load_adapter(reference.out)[2]  # same metadata
    assert [r.val_dice for r in resumed.history] == [r.val_dice for r in reference.history]


def test_resume_refuses_other_settings_and_corrupt_checkpoints(reference, datasets, tmp_path):
    out = tmp_path / "adapter.safetensors"
    out.write_bytes(b"keep me")
    ckpt = checkpoint_path(out)
    ckpt.write_bytes(reference.checkpoint.read_bytes())
    with pytest.raises(CheckpointError, match="other settings") as info:
        train(config(datasets, out, resume=True, lr=5e-4))
    assert str(ckpt) in str(info.value) and "lr" in str(info.value)
    ckpt.write_bytes(reference.checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable training checkpoint") as info:
        train(config(datasets, out, resume=True))
    assert str(ckpt) in str(info.value)
    ckpt.unlink()
    with pytest.raises(CheckpointError, match="no checkpoint") as info:
        train(config(datasets, out, resume=True))
    assert str(ckpt) in str(info.value)
    assert out.read_bytes() == b"keep me"


def test_init_refuses_adapters_of_another_model_or_corrupt_files(reference, datasets, tmp_path):
    out = tmp_path / "adapter.safetensors"
    out.write_bytes(b"keep me")
    adapter, tensors, _ = load_adapter(reference.out)
    foreign = tmp_path / "mobile.safetensors"
    save_adapter(foreign, tensors, config=adapter, base_model_name="mobile_sam",
                 base_sha256=checkpoint_sha256("mobile_sam"))
    with pytest.raises(AdapterError, match="mobile_sam") as info:
        train(config(datasets, out, init=foreign))
    assert str(foreign) in str(info.value)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(reference.out.read_bytes()[:-100])
    with pytest.raises(AdapterError, match="not a readable safetensors") as info:
        train(config(datasets, out, init=broken))
    assert str(broken) in str(info.value)
    assert out.read_bytes() == b"keep me" and not checkpoint_path(out).exists()


def test_cli_errors_are_one_line_naming_the_input(tmp_path):
    runner = CliRunner()
    missing = tmp_path / "no_such_dataset"
    result = runner.invoke(app, ["train", "--data", str(missing), "--out", str(tmp_path / "a.safetensors")])
    assert result.exit_code == 1 and str(missing) in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["train", "--data", str(missing), "--out", "a.safetensors", "--adapter", "dora"])
    assert result.exit_code == 1 and "adapter kind must be one of" in result.output and "dora" in result.output


def test_torchrun_two_cpu_processes_train_an_adapter(datasets, tmp_path):
    data, val = datasets
    out = tmp_path / "ddp.safetensors"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
        "-m", "gmiseg_edge.cli", "train", "--model", MODEL, "--data", str(data), "--val", str(val),
        "--adapter", "lora", "--rank", "4", "--epochs", "1", "--batch-size", "1", "--out", str(out),
        "--device", "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    adapter, tensors, metadata = load_adapter(out)
    assert adapter.kind == "lora" and metadata["base_model"] == MODEL
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if k.endswith(".B"))  # it trained
    assert proc.stdout.count("trainable of") == 1  # rank 0 alone reports
    assert "on cpu x2" in proc.stdout and checkpoint_path(out).is_file()
