"""Held-out experiment: does adapting lite_medsam with LoRA / Loose LoRA help on cases it was not trained on?

    .venv/bin/python benchmarks/heldout_adapters.py --out runs/heldout

Adapts lite_medsam (rank 4, Q/V of the image encoder, default training settings: focal + Dice, AdamW lr 1e-3,
mixed box/point prompts, flips and noise, a fixed number of epochs, no validation set so nothing is tuned on
the test cases) on every labelled slice of two shipped lesion volumes (lung2 CT, brain1 MR). It then scores
the base model and both adapters, through the PyTorch reference predictor, on cases never trained on:
lesions of other patients of the same kinds (lung1, brain2), a lesion of an unseen modality (breast1 MR),
and unseen organs of an unseen scan (TotalSegmentator abdomen: every 3rd labelled slice of liver, spleen and
both kidneys). Prompts are seeded and identical for the three models: a box from the mask's extent pushed
out by 0-5 pixels per side, and 3 random foreground points. Prints a markdown table (also written to
``<out>/results.md`` with the raw figures in ``results.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch

from gmiseg_edge.adapters import AdapterConfig, apply_adapter
from gmiseg_edge.data import load_sample_cases
from gmiseg_edge.metrics import dice
from gmiseg_edge.models.build import build_model, checkpoint_sha256
from gmiseg_edge.models.reference import TorchReference
from gmiseg_edge.models.zoo import get_spec
from gmiseg_edge.train import PromptConfig, TrainConfig, simulate_box, simulate_points, train

MODEL = "lite_medsam"
TRAIN_CASES = ["lung2", "brain1"]
TEST_GROUPS = {
    "lesions, same kinds (lung1 CT, brain2 MR)": ["lung1", "brain2"],
    "lesion, unseen modality (breast1 MR)": ["breast1"],
    "organs, unseen task (TotalSeg abdomen)": ["totalseg_abdomen"],
}
ADAPTERS = {"LoRA": "lora", "Loose LoRA": "loose_lora"}


def write_training_set(root: Path) -> int:
    """The training slices as uint8 PNGs (already windowed as the sample index says) in a dataset folder."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cases = load_sample_cases(TRAIN_CASES, slices="all")
    for case in cases:
        stem = case.name.replace("/", "_") + f"_{case.slice_index:03d}"
        cv2.imwrite(str(root / "images" / f"{stem}.png"), case.image)
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), case.mask.astype(np.uint8))
    return len(cases)


def test_cases() -> list[tuple[str, object]]:
    out = []
    for group, names in TEST_GROUPS.items():
        for case in load_sample_cases(names, slices="all"):
            if case.case == "totalseg_abdomen" and case.slice_index % 3:
                continue
            out.append((group, case))
    return out


def evaluate(model: torch.nn.Module, cases: list, seed: int) -> dict[str, dict[str, list[float]]]:
    """Dice per case with a box and with 3 points (seeded per case, the same for every model)."""
    predictor = TorchReference(model, get_spec(MODEL).preprocess)
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"box": [], "points": []})
    embeddings: dict[bytes, tuple] = {}
    for index, (group, case) in enumerate(cases):
        key = case.image.tobytes()
        if key not in embeddings:
            embeddings = {key: predictor.prepare(case.image)}  # consecutive cases share slices
        prepared, embedding = embeddings[key]
        rng = np.random.default_rng([seed, index])
        box = simulate_box(case.mask, rng, max_offset=5)
        points = simulate_points(case.mask, 3, rng)
        by_box = predictor.predict(prepared, embedding, box=box).mask
        by_points = predictor.predict(prepared, embedding, points=points, labels=np.ones(3)).mask
        scores[group]["box"].append(dice(by_box, case.mask))
        scores[group]["points"].append(dice(by_points, case.mask))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/heldout"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on this shared 2-core machine 2 threads are slower under load)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    n_train = write_training_set(args.out / "data" / "train")
    cases = test_cases()
    print(f"training on {n_train} slices of {', '.join(TRAIN_CASES)}; testing on {len(cases)} held-out slices")

    rows: dict[str, dict] = {}
    started = time.perf_counter()
    base = build_model(MODEL)
    rows["base (no adapter)"] = {"scores": evaluate(base, cases, args.seed), "size": None, "seconds": None,
                                 "params": None}
    sha = checkpoint_sha256(MODEL)
    for label, kind in ADAPTERS.items():
        out = args.out / f"{kind}_r{args.rank}.safetensors"
        config = TrainConfig(
            data=args.out / "data" / "train", out=out, model=MODEL, adapter=AdapterConfig(kind=kind, rank=args.rank),
            epochs=args.epochs, batch_size=1, seed=args.seed, prompts=PromptConfig(mode="mixed"), device="cpu",
        )
        result = train(config)
        print(f"{label}: trained {len(result.history)} epochs in {result.seconds:.0f} s, "
              f"loss per epoch {[round(r.loss, 3) for r in result.history]}")
        model = build_model(MODEL)
        apply_adapter(model, out, MODEL, sha)
        rows[f"{label} r{args.rank}"] = {
            "scores": evaluate(model, cases, args.seed), "size": out.stat().st_size, "seconds": result.seconds,
            "params": result.counts.adapter, "losses": [r.loss for r in result.history],
        }

    groups = list(TEST_GROUPS)
    counts = {g: sum(1 for c in cases if c[0] == g) for g in groups}
    header = ["model"] + [f"{g} n={counts[g]}: box / points" for g in groups]
    header += ["all: box / points", "adapter params", "adapter file", f"training ({args.threads} thread)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows.items():
        cells = [name]
        for group in [*groups, "all"]:
            values = ({k: [v for g in groups for v in row["scores"][g][k]] for k in ("box", "points")}
                      if group == "all" else row["scores"][group])
            cells.append(f"{np.mean(values['box']):.3f} / {np.mean(values['points']):.3f}")
        cells.append("-" if row["params"] is None else f"{row['params']:,}")
        cells.append("-" if row["size"] is None else f"{row['size'] / 1024:.0f} KiB")
        cells.append("-" if row["seconds"] is None else f"{row['seconds'] / 60:.1f} min")
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    note = (f"lite_medsam, adapters rank {args.rank} on Q/V, {args.epochs} epochs x {n_train} slices (batch 1) "
            f"on {', '.join(TRAIN_CASES)}; mean Dice on held-out slices; seed {args.seed}; "
            f"{platform.processor() or platform.machine()}, torch {torch.__version__}; "
            f"total {(time.perf_counter() - started) / 60:.1f} min")
    print(f"\n{table}\n\n{note}")
    (args.out / "results.md").write_text(f"{table}\n\n{note}\n")
    raw = {name: {**row, "scores": {g: dict(v) for g, v in row["scores"].items()}} for name, row in rows.items()}
    (args.out / "results.json").write_text(json.dumps({"note": note, "rows": raw}, indent=1))


if __name__ == "__main__":
    main()
