"""Peak RSS of ``gmiseg-edge segment --support DIR`` with many small supports on one query (issue 26: 200 took 8 GB).

    .venv/bin/python benchmarks/supports_memory.py --model-dir models/lite_medsam [--count 200] [--side 256]
        [--cache-dir /tmp/supports-cache] [--keep DIR]

The support set is ``count`` ``side``² crops (PNG image + mask pairs in ``images/`` + ``masks/``) of the shipped
CT lesion slices (lung1, lung2; lung window), each crop placed at its own seeded offset around the lesion so that
no two are alike (each is encoded once: ``--cache-dir`` keeps the embeddings, so a rerun skips the encoder). The
query is the largest lesion slice of lung1 cropped the same way. The whole command runs in a fresh subprocess
(``python -m gmiseg_edge.cli segment``); its peak RSS is ``ru_maxrss`` of ``RUSAGE_CHILDREN`` (this parent only
waits). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from gmiseg_edge.data import load_sample_cases


def crop_around(image: np.ndarray, mask: np.ndarray, side: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """A ``side``² crop of ``image``/``mask`` holding the mask's centre at a random place away from the border."""
    rows, cols = np.nonzero(mask)
    cy, cx = int(rows.mean()), int(cols.mean())
    margin = side // 4
    top = int(np.clip(cy - rng.integers(margin, side - margin), 0, image.shape[0] - side))
    left = int(np.clip(cx - rng.integers(margin, side - margin), 0, image.shape[1] - side))
    return image[top:top + side, left:left + side], mask[top:top + side, left:left + side]


def write_support_set(folder: Path, count: int, side: int, seed: int = 0) -> Path:
    """``count`` support pairs in ``folder/images`` + ``folder/masks``; returns the query image's path (beside
    ``folder``)."""
    cases = [c for c in load_sample_cases(["lung1", "lung2"], slices="all") if c.image.shape[0] >= side]
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    written = 0
    while written < count:
        case = cases[written % len(cases)]
        image, mask = crop_around(case.image, case.mask, side, rng)
        if not mask.any() or mask.all():
            continue
        cv2.imwrite(str(folder / "images" / f"s{written:04d}.png"), image)
        cv2.imwrite(str(folder / "masks" / f"s{written:04d}.png"), mask.astype(np.uint8))
        written += 1
    query_case = max((c for c in cases if c.name.startswith("lung1")), key=lambda c: int(c.mask.sum()))
    query, _ = crop_around(query_case.image, query_case.mask, side, np.random.default_rng(seed + 1))
    path = folder.parent / "query.png"
    cv2.imwrite(str(path), query)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--count", type=int, default=200, help="number of supports")
    parser.add_argument("--side", type=int, default=256, help="side of each support and of the query, pixels")
    parser.add_argument("--cache-dir", default=None, help="disk embedding cache (reruns skip the encoder)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", default=None, help="write the support set and outputs here (kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        supports = root / "supports"
        query = write_support_set(supports, args.count, args.side)
        command = [sys.executable, "-m", "gmiseg_edge.cli", "segment", "--model-dir", args.model_dir,
                   "--image", str(query), "--support", str(supports), "--out", str(root / "out"),
                   "--backend", "ort", "--threads", str(args.threads)]
        if args.cache_dir:
            command += ["--cache-dir", args.cache_dir]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        mask = cv2.imread(str(root / "out" / "query_mask.png"), cv2.IMREAD_UNCHANGED)
        result = {"supports": args.count, "side": args.side, "returncode": done.returncode, "peak_mib": peak,
                  "seconds": seconds, "mask_pixels": None if mask is None else int((mask > 0).sum())}
        if done.returncode != 0:
            result["stderr_tail"] = done.stderr.strip().splitlines()[-5:]
    print(json.dumps(result, indent=2))
    print(f"{args.count} supports of {args.side}²: peak RSS {peak:.0f} MiB, {seconds:.0f} s, exit {done.returncode}")


if __name__ == "__main__":
    main()
