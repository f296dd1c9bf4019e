"""Task decoders in the benchmark (DESIGN §11): each task's decoder size on disk and its latency, and the proof
that a second task on an encoded image costs only its decoder.

One ONNX Runtime fp32 predictor with its own in-memory cache; per round (tasks in rotated order): the cache is
cleared, the base decoder's prompt encodes the image (``cold``), then every task decodes the same box on the
cached embedding. Each task row records its decoder's p50 and the encoder runs its calls caused (0 when the
embedding is shared, which is the claim).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gmiseg_edge.core.manifest import Manifest
from gmiseg_edge.runtime import load
from gmiseg_edge.runtime.cache import EmbeddingCache

BASE = "(base decoder)"


@dataclass
class TaskBench:
    """One decoder: its task (BASE for the folder's own), bytes on disk, prompt times on a cached embedding."""

    task: str
    bytes: int
    times: list[float] = field(default_factory=list)
    encoder_runs: int = 0  # encoder runs caused by this decoder's calls on the already-encoded image

    def to_dict(self) -> dict[str, Any]:
        p50 = float(np.median(self.times) * 1e3) if self.times else None
        return {"task": self.task, "bytes": self.bytes, "cached_prompt_p50_ms": p50,
                "encoder_runs": self.encoder_runs, "runs": len(self.times)}


def bench_tasks(model_dir: str | Path, image: np.ndarray, box: np.ndarray, tasks: Sequence[str] | None = None,
                runs: int = 10, warmup: int = 2, threads: int | None = None) -> list[TaskBench]:
    """Time the base decoder and each task decoder (all of the folder's by default) as the module docstring says.
    Returns [] for a folder without tasks."""
    manifest = Manifest.load(model_dir)
    names = list(tasks) if tasks is not None else sorted(manifest.tasks())
    if not names:
        return []
    predictor = load(model_dir, backend="ort", precision="fp32", threads=threads, cache=EmbeddingCache())
    try:
        base_bytes = int(manifest.file_entry(manifest.graph_path("decoder", "fp32").name)["bytes"])
        rows = [TaskBench(BASE, base_bytes)] + [TaskBench(t, predictor.tasks.bytes(t)) for t in names]
        for t in names:
            predictor.task_decoder(t)  # opened (and verified) before timing
        for index in range(warmup + runs):
            predictor.cache.clear_memory()
            predictor.predict(image, box=box)  # encodes: the one encoder run of the round
            shift = index % len(rows)
            for row in rows[shift:] + rows[:shift]:
                before = predictor.stats.encoder_runs
                start = time.perf_counter()
                predictor.predict(image, box=box, task=None if row.task == BASE else row.task)
                elapsed = time.perf_counter() - start
                if index >= warmup:
                    row.times.append(elapsed)
                    row.encoder_runs += predictor.stats.encoder_runs - before
        return rows
    finally:
        predictor.close()
