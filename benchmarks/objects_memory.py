"""Peak RSS of many objects on one image: ``predict(image, boxes=...).label_map()``, one process per count.

    .venv/bin/python benchmarks/objects_memory.py --model-dir models/lite_medsam [--counts 1 16 256 1000] [--side 512]

Each count runs in a fresh process (peak RSS, ``resource.getrusage``, cannot go down within one): the model is
loaded, a random ``side``² image encoded, then ``count`` 50-pixel boxes decoded and merged into one label map.
Printed side by side: the peak after encoding (the baseline), the peak at the end, and the seconds of the call.
The issue 26 target: 1000 boxes on 512² at most 1 GB end to end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import numpy as np
from gmiseg_edge.runtime import load
model_dir, count, side = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
predictor = load(model_dir, backend="ort", threads=2)
rng = np.random.default_rng(0)
image = rng.integers(0, 255, (side, side), np.uint8)
encoded = predictor.encode(image)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
x0, y0 = rng.integers(0, side - 60, count), rng.integers(0, side - 60, count)
boxes = np.stack([x0, y0, x0 + 50, y0 + 50], 1).astype(np.float32)
start = time.perf_counter()
labels = predictor.predict(encoded, boxes=boxes).label_map()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"count": count, "base_mib": base, "peak_mib": peak, "seconds": seconds,
                  "labels": int(len(np.unique(labels)) - 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 16, 256, 1000])
    parser.add_argument("--side", type=int, default=512)
    args = parser.parse_args()
    print(f"| boxes on {args.side}² | peak after encoding MiB | peak MiB | call s | labels |")
    print("| --- | --- | --- | --- | --- |")
    for count in args.counts:
        done = subprocess.run([sys.executable, "-c", CHILD, args.model_dir, str(count), str(args.side)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"| {count} | failed: {done.stderr.strip().splitlines()[-1]} | | | |", flush=True)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {count} | {row['base_mib']:.0f} | {row['peak_mib']:.0f} | {row['seconds']:.1f} | {row['labels']} |",
              flush=True)


if __name__ == "__main__":
    main()
