"""``gmiseg-edge bench --server URL``: the latency of the served models over the network, and optionally of the
in-process runtime on the same image and prompt, interleaved round by round so machine noise hits both alike.

Stages: ``encode`` (a new image each round, so the server's cache misses), ``decode`` (a box on the encoded
image: the decoder only), ``segment cold`` (a new image + box in one call) and ``segment cached`` (the same image
again: the server hashes it, finds the embedding and decodes). A new image is the sample slice with two pixels
changed, which changes its cache key and not its mask.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.data.samples import load_sample_cases
from gmiseg_edge.jobs.bench.latency import summarise_times
from gmiseg_edge.runtime import load
from gmiseg_edge.serve.client import SegmentClient

SERVER_STAGES = ("encode", "decode", "segment cold", "segment cached")


@dataclass
class ServerBenchResult:
    """Timings (seconds) per stage and place (``server``, ``in-process``)."""

    url: str
    case: str
    image_shape: tuple[int, ...]
    runs: int
    times: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def stats(self) -> dict[str, dict[str, dict[str, float]]]:
        """min/p50/p90/p99/max in ms, by place and stage."""
        return {place: {stage: summarise_times(values) for stage, values in stages.items()}
                for place, stages in self.times.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "case": self.case, "image_shape": list(self.image_shape), "runs": self.runs,
                "stats_ms": self.stats(),
                "times_ms": {p: {s: [round(v * 1e3, 3) for v in vs] for s, vs in st.items()}
                             for p, st in self.times.items()}}


def variant(image: np.ndarray, index: int) -> np.ndarray:
    """``image`` with two corner pixels set from ``index``: another cache key, the same mask in practice."""
    changed = image.copy()
    changed[0, 0], changed[-1, -1] = index % 251, (index // 251) % 251
    return changed


def run_server_bench(url: str, runs: int = 10, warmup: int = 2, case: str = "lung2",
                     model_dir: str | Path | None = None, threads: int | None = None) -> ServerBenchResult:
    """Time the four stages against the server at ``url`` (and in process on ``model_dir`` when given)."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    sample = load_sample_cases([case])[0]
    image, box = sample.image, box_from_mask(sample.mask)
    client = SegmentClient(url)
    predictor = load(model_dir, backend="ort", threads=threads) if model_dir is not None else None
    places = ["server"] + (["in-process"] if predictor is not None else [])
    result = ServerBenchResult(url=client.target, case=case, image_shape=tuple(image.shape), runs=runs,
                               times={p: {s: [] for s in SERVER_STAGES} for p in places})
    clock = time.perf_counter
    stamp = int(time.time()) % 10007  # a fresh run does not meet the previous run's cached images
    try:
        for round_index in range(warmup + runs):
            fresh = [variant(image, stamp * 1000 + 4 * round_index + j) for j in range(2)]
            for place in places[round_index % len(places):] + places[:round_index % len(places)]:
                t0 = clock()
                if place == "server":
                    key = client.encode(fresh[0])
                    t1 = clock()
                    client.decode(key, box=box)
                    t2 = clock()
                    client.segment(fresh[1], box=box)
                    t3 = clock()
                    client.segment(fresh[1], box=box)
                else:
                    assert predictor is not None
                    encoded = predictor.encode(fresh[0])
                    t1 = clock()
                    predictor.predict(encoded, box=box)
                    t2 = clock()
                    predictor.predict(fresh[1], box=box)
                    t3 = clock()
                    predictor.predict(fresh[1], box=box)
                t4 = clock()
                if round_index >= warmup:
                    for stage, seconds in zip(SERVER_STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                        result.times[place][stage].append(seconds)
    finally:
        client.close()
        if predictor is not None:
            predictor.close()
    return result
