"""Held-out experiment: task adapters on the decoder side (DESIGN §11): base vs LoRA vs Loose LoRA, and forgetting.

    PYTHONPATH=. .venv/bin/python benchmarks/task_adapters.py --model-dir /tmp/lite_medsam --out runs/task_adapters

Two tasks that the base lite_medsam does poorly, each trained on every labelled slice of one shipped scan and
tested on another patient's scan of the same kind: lung lesion (supports lung2 CT, test lung1) and brain lesion
(supports brain1 MR, test brain2). For each task, LoRA and Loose LoRA of the same rank on the mask decoder's
attention Q/V (the encoder frozen; its embeddings computed once by the folder's ONNX encoder), trained with
:func:`gmiseg_edge.train.decoder_adapt.adapt_decoder` (focal + Dice, mixed box/point prompts, a fifth of the
supports held back for early stopping: nothing is tuned on the test scans), for each seed. Every adapted decoder
is exported to ONNX (merged) and scored in ONNX Runtime, on the same embeddings and the same seeded prompts as
the base decoder: a box from the mask's extent pushed out by 0-5 pixels per side, and 3 random foreground
points, ``--draws`` draws per slice.

Forgetting: the same adapted decoders on structures they were not trained for: the other lesion kind, a breast
lesion (breast1 MR) and the abdominal organs of the TotalSegmentator scan (liver, spleen, kidneys; every 6th
labelled slice); the figure is Dice(adapted) - Dice(base) there. Prints a markdown table (also
``<out>/results.md``; raw figures in ``results.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from gmiseg_edge.adapters import AdapterConfig, merge
from gmiseg_edge.core.graph_io import DECODER_OUTPUTS
from gmiseg_edge.core.manifest import Manifest
from gmiseg_edge.core.prediction import make_prediction, output_choice
from gmiseg_edge.core.prompts import make_prompt, simulate_box, simulate_points
from gmiseg_edge.data import load_sample_cases
from gmiseg_edge.export.onnx_export import export_decoder
from gmiseg_edge.export.task_decoder import folder_model
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime import load
from gmiseg_edge.runtime.backends.onnxrt.session import cpu_session
from gmiseg_edge.runtime.cache import EmbeddingCache
from gmiseg_edge.train.decoder_adapt import DecoderAdaptConfig, SupportEmbedding, adapt_decoder

TASKS = {"lung lesion": ("lung2", "lung1"), "brain lesion": ("brain1", "brain2")}
OTHERS = {"lung lesion": "brain2", "brain lesion": "lung1"}  # the other lesion kind: part of the forgetting set
FORGETTING = ["breast1", "totalseg_abdomen"]
KINDS = {"LoRA": "lora", "Loose LoRA": "loose_lora"}


ORGAN_STRIDE = 6  # every 6th labelled slice of the abdominal scan (18 of 102 (organ, slice) cases)


def cases_of(name: str) -> list:
    cases = load_sample_cases([name], slices="all")
    return [c for c in cases if name != "totalseg_abdomen" or c.slice_index % ORGAN_STRIDE == 0]


class Encoded:
    """Every needed slice encoded once by the folder's fp32 ONNX encoder (the runtime, in-memory cache)."""

    def __init__(self, model_dir: Path, cache: Path) -> None:
        self.predictor = load(model_dir, backend="ort", precision="fp32", threads=1,
                              cache=EmbeddingCache(max_bytes=2**31, folder=cache))

    def __call__(self, case):
        return self.predictor.encode(case.image)


def score(session, encoded, cases: list, draws: int, seed: int, size: int) -> dict[str, list[float]]:
    """Dice per (case, draw) with a box and with 3 points, the prompts seeded per case and draw."""
    out: dict[str, list[float]] = {"box": [], "points": []}
    for index, case in enumerate(cases):
        emb = encoded(case)
        for draw in range(draws):
            rng = np.random.default_rng([seed, index, draw])
            prompts = {"box": make_prompt(box=simulate_box(case.mask, rng, 5), image_size=emb.size),
                       "points": make_prompt(simulate_points(case.mask, 3, rng), np.ones(3), image_size=emb.size)}
            for kind, prompt in prompts.items():
                inputs = prompt.decoder_inputs(emb.embedding, emb.size, size)
                low_res, iou = session.run(list(DECODER_OUTPUTS), inputs.feed())
                pred = make_prediction(emb.prepared, low_res[0], iou[0], output_choice(prompt.ambiguous), size)
                out[kind].append(dice(pred.mask, case.mask))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="a lite_medsam folder from gmiseg-edge export")
    parser.add_argument("--out", type=Path, default=Path("runs/task_adapters"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4, help="epochs at most (early stopping may end sooner)")
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--draws", type=int, default=3, help="prompt draws per test slice")
    parser.add_argument("--forget-draws", type=int, default=1, help="prompt draws per slice of other structures")
    parser.add_argument("--epochs-cap-seconds", type=float, default=1e9, help="time budget per training run")
    parser.add_argument("--threads", type=int, default=1, help="1: a second thread loses on this busy 2-core CPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    manifest = Manifest.load(args.model_dir)
    size = manifest.preprocess.input_size
    encoded = Encoded(args.model_dir, args.out / "embeddings")
    base_session = cpu_session(manifest.graph_path("decoder", "fp32"), threads=args.threads)
    started = time.perf_counter()
    results: dict = {"settings": vars(args) | {"out": str(args.out), "model_dir": str(args.model_dir)},
                     "machine": platform.processor() or platform.machine(), "tasks": {}}
    for task, (support_scan, test_scan) in TASKS.items():
        supports = [SupportEmbedding(c.name, encoded(c).embedding, encoded(c).size, c.mask)
                    for c in cases_of(support_scan)]
        test = cases_of(test_scan)
        forget = cases_of(OTHERS[task]) + [c for name in FORGETTING for c in cases_of(name)]
        entry: dict = {"supports": f"{support_scan} ({len(supports)} slices)", "test": f"{test_scan} ({len(test)})",
                       "forgetting_cases": len(forget), "rows": defaultdict(list)}
        entry["rows"]["base"] = [{"test": score(base_session, encoded, test, args.draws, 0, size),
                                  "forget": score(base_session, encoded, forget, args.forget_draws, 0, size)}]
        for label, kind in KINDS.items():
            for seed in seeds:
                model, _ = folder_model(manifest)
                config = DecoderAdaptConfig(
                    adapter=AdapterConfig(kind=kind, rank=args.rank, include_decoder=True, include_encoder=False),
                    time_budget=args.epochs_cap_seconds, max_epochs=args.epochs, patience=args.patience, seed=seed,
                    threads=args.threads)
                run = adapt_decoder(model, supports, manifest.preprocess, config)
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "decoder.onnx"
                    export_decoder(merge(run.model), path)
                    session = cpu_session(path, threads=args.threads)
                    row = {"seed": seed, "test": score(session, encoded, test, args.draws, 0, size),
                           "forget": score(session, encoded, forget, args.forget_draws, 0, size),
                           "epochs": len(run.history), "best_epoch": run.best_epoch, "seconds": run.seconds,
                           "held_back": [run.base_dice, run.best_dice], "parameters": run.adapter_parameters,
                           "decoder_bytes": path.stat().st_size}
                entry["rows"][label].append(row)
                print(f"{task} {label} seed {seed}: {row['epochs']} epochs (best {row['best_epoch']}) in "
                      f"{row['seconds']:.0f} s; test box {np.mean(row['test']['box']):.4f} points "
                      f"{np.mean(row['test']['points']):.4f}", flush=True)
        results["tasks"][task] = entry
    results["seconds"] = time.perf_counter() - started
    table = render(results)
    print(table)
    (args.out / "results.md").write_text(table)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float))


def render(results: dict) -> str:
    """The markdown table: mean Dice (± sd over seeds) on the test scan and the change on other structures."""
    lines = ["| task | decoder | params | test box Dice | test points Dice | other structures box Δ | "
             "other structures points Δ | epochs (best) | train s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for task, entry in results["tasks"].items():
        base = entry["rows"]["base"][0]
        base_forget = {k: float(np.mean(v)) for k, v in base["forget"].items()}
        for label, rows in entry["rows"].items():
            def stat(part: str, kind: str, delta: bool = False, rows=rows, base_forget=base_forget) -> str:
                values = [float(np.mean(r[part][kind])) - (base_forget[kind] if delta else 0.0) for r in rows]
                spread = f" ± {np.std(values):.3f}" if len(values) > 1 else ""
                return f"{np.mean(values):+.3f}{spread}" if delta else f"{np.mean(values):.3f}{spread}"

            if label == "base":
                lines.append(f"| {task} ({entry['supports']} -> {entry['test']}) | base | - | {stat('test', 'box')} | "
                             f"{stat('test', 'points')} | (box {base_forget['box']:.3f}) | "
                             f"(points {base_forget['points']:.3f}) | - | - |")
                continue
            epochs = ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in rows)
            lines.append(f"| | {label} | {rows[0]['parameters']:,} | {stat('test', 'box')} | {stat('test', 'points')} "
                         f"| {stat('forget', 'box', True)} | {stat('forget', 'points', True)} | {epochs} | "
                         f"{np.mean([r['seconds'] for r in rows]):.0f} |")
    lines.append(f"\n{len(next(iter(results['tasks'].values()))['rows']['LoRA'])} seeds; whole run "
                 f"{results['seconds']:.0f} s")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
