"""``gmiseg-edge adapt``: a task adapter from a support set, in seconds, and its decoder added to the folder.

The steps (DESIGN §11): the support set is read by the one support-set reader (:mod:`gmiseg_edge.data.support_sets`:
its rules for which label counts and for empty masks; every 2D pair, every labelled slice of a volume); the
torch-free runtime encodes each support image through the embedding cache (a disk cache by default, so a second run
on the same supports never runs the encoder); the torch side trains LoRA / Loose LoRA on the mask decoder from those
embeddings (:func:`gmiseg_edge.train.decoder_adapt.adapt_decoder`); the adapter is written (safetensors, with the
base checkpoint's sha256 and the folder encoder's identity); then, unless asked not to, its decoder is exported into
the folder as ``decoders/<task>.onnx`` and validated on up to five of the supports' embeddings
(:func:`gmiseg_edge.export.task_decoder.add_task_decoder`). Every argument is checked before anything runs; a
failure leaves the model folder as it was.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gmiseg_edge.adapters import AdapterConfig, save_adapter
from gmiseg_edge.core.errors import GmisegError, InputError, ManifestError
from gmiseg_edge.core.files import user_cache_dir
from gmiseg_edge.core.manifest import Manifest, check_task_name
from gmiseg_edge.core.selection import spread
from gmiseg_edge.core.transforms import ImageGeometry
from gmiseg_edge.data.intensity import Window
from gmiseg_edge.export.task_decoder import (
    TASK_KEY,
    EncodedCase,
    TaskDecoderResult,
    add_task_decoder,
    encoder_identity,
    folder_model,
)
from gmiseg_edge.runtime import load
from gmiseg_edge.train.decoder_adapt import (
    DecoderAdaptConfig,
    DecoderAdaptResult,
    Progress,
    SupportEmbedding,
    adapt_decoder,
)
from gmiseg_edge.train.prompts import PromptConfig
from gmiseg_edge.train.samples import load_support_samples

Log = Callable[[str], None]
VALIDATION_CASES = 5  # supports the task decoder is validated on against PyTorch (their embeddings are at hand)


def default_cache_dir() -> Path:
    """The disk embedding cache ``adapt`` uses unless told otherwise (keys include the encoder's sha256)."""
    return user_cache_dir() / "embeddings"


#: where ``adapt --no-add`` writes the adapter when no ``--out`` is given (inside the model folder)
ADAPTERS_DIR = "adapters"


class NoGainError(GmisegError):
    """Training found nothing better than the untouched decoder: nothing is written or added."""


@dataclass
class AdaptOptions:
    """What ``gmiseg-edge adapt`` was asked for."""

    model_dir: Path
    support: Path
    task: str
    out: Path | None = None  # the adapter file; default: only the model folder's copy (--no-add: ADAPTERS_DIR)
    kind: str = "loose_lora"
    rank: int = 4
    time_budget: float = 10.0
    seed: int = 0
    patience: int = 10
    max_epochs: int = 200
    val_fraction: float = 0.2  # share of the supports held back for early stopping
    prompt: str = "mixed"
    label: int | None = None
    window: Window = "percentile"  # non-uint8 intensities to uint8
    axis: int = 2
    cache_dir: Path | None = field(default_factory=default_cache_dir)
    add: bool = True  # add the task decoder to the model folder
    add_unchanged: bool = False  # add (or write) the adapter even when no epoch beat the untouched decoder
    threads: int | None = None

    @property
    def adapter_path(self) -> Path | None:
        """Where the adapter file goes: ``out``; else, with ``add``, only the copy ``add`` puts in the model folder's
        ``decoders/`` (None here); else the model folder's ``adapters/<task>.safetensors``. Never the working
        folder unasked."""
        if self.out is not None:
            return Path(self.out)
        return None if self.add else Path(self.model_dir) / ADAPTERS_DIR / f"{self.task}.safetensors"

    def train_config(self) -> DecoderAdaptConfig:
        adapter = AdapterConfig(kind=self.kind, rank=self.rank, include_decoder=True, include_encoder=False)
        try:
            prompts = PromptConfig(mode=self.prompt)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        return DecoderAdaptConfig(adapter=adapter, time_budget=self.time_budget, max_epochs=self.max_epochs,
                                  patience=self.patience, seed=self.seed, prompts=prompts,
                                  val_fraction=self.val_fraction)


@dataclass
class AdaptResult:
    adapter: Path
    training: DecoderAdaptResult
    task: TaskDecoderResult | None
    seconds: dict[str, float]  # per step: load, encode, train, save, add; and total
    encoder_runs: int
    n_supports: int


def check_options(options: AdaptOptions) -> tuple[Manifest, DecoderAdaptConfig]:
    """Everything that can be refused before any work: the folder, the task name, the settings, the output."""
    manifest = Manifest.load(options.model_dir)
    check_task_name(options.task, "--task")
    if options.add and options.task in manifest.tasks():
        raise ManifestError(f"{options.model_dir}: task {options.task!r} already exists; choose another name")
    config = options.train_config()
    if options.adapter_path is not None and options.adapter_path.exists():
        raise InputError(f"{options.adapter_path}: already exists; choose another --out")
    return manifest, config


def adapt(options: AdaptOptions, log: Log | None = None, progress: Progress | None = None) -> AdaptResult:
    """Run the whole ``adapt`` job (module docstring); raises GmisegError with the model folder unchanged."""
    say = log or (lambda message: None)
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    manifest, config = check_options(options)
    samples = load_support_samples(options.support, window=options.window, axis=options.axis, label=options.label)
    predictor = load(options.model_dir, backend="ort", precision="fp32", threads=options.threads,
                     cache=options.cache_dir)
    seconds["load"] = time.perf_counter() - start
    try:
        mark = time.perf_counter()
        encoded = predictor.encode_many([s.image for s in samples])
        runs = predictor.stats.encoder_runs
    finally:
        predictor.close()
    seconds["encode"] = time.perf_counter() - mark
    say(f"{len(samples)} supports from {options.support}: {runs} encoded, {len(samples) - runs} from the cache "
        f"({seconds['encode']:.1f} s)")
    supports = [SupportEmbedding(s.name, e.embedding, e.size, s.mask) for s, e in zip(samples, encoded, strict=True)]

    mark = time.perf_counter()
    model, base_sha = folder_model(manifest)
    training = adapt_decoder(model, supports, manifest.preprocess, config, progress)
    seconds["train"] = time.perf_counter() - mark
    best = "" if training.best_dice is None else (
        f"; held-back Dice {training.base_dice:.4f} -> {training.best_dice:.4f} (epoch {training.best_epoch})")
    say(f"trained {len(training.history)} epochs on {training.n_train} supports ({training.stopped}, "
        f"{training.seconds:.1f} s){best}")
    if unchanged(training) and not options.add_unchanged:
        raise NoGainError(f"{options.support}: no epoch beat the untouched decoder on the held-back supports "
                          f"(Dice {training.base_dice:.4f}, best epoch 0): the task decoder would equal the base "
                          f"decoder, so nothing was written or added. Try more or other supports, a longer "
                          f"--time-budget, or --add-unchanged to add it anyway")

    with tempfile.TemporaryDirectory(prefix=".adapter-") as staging:
        mark = time.perf_counter()
        identity = encoder_identity(manifest) | {TASK_KEY: options.task}
        target = options.adapter_path or Path(staging) / f"{options.task}.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        path = save_adapter(target, training.model, base_model_name=manifest.model_name,
                            base_sha256=base_sha, extra_metadata=identity)
        seconds["save"] = time.perf_counter() - mark
        if options.adapter_path is not None:
            say(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB, {training.adapter_parameters:,} adapter "
                "parameters)")
        task = None
        if options.add:
            mark = time.perf_counter()
            cases = [EncodedCase(s.name, ImageGeometry.of(*s.original_size, manifest.preprocess.input_size),
                                 s.embedding, s.mask) for s in spread(supports, VALIDATION_CASES)]
            task = add_task_decoder(options.model_dir, options.task, path, validation=cases, log=say)
            seconds["add"] = time.perf_counter() - mark
            path = task.adapter  # the model folder's copy (the staging file goes with the staging folder)
            if options.adapter_path is None:
                say(f"the adapter is {path} ({training.adapter_parameters:,} adapter parameters)")
    seconds["total"] = time.perf_counter() - start
    return AdaptResult(path, training, task, seconds, runs, len(samples))


def unchanged(training: DecoderAdaptResult) -> bool:
    """True when parts were held back and no epoch scored above the untouched decoder on them (best epoch 0):
    the adapter kept is the untrained one, whose decoder equals the base decoder."""
    return training.best_dice is not None and training.best_epoch == 0
