"""Peak memory of reading and preprocessing one large PNG (issue 12: a 20000 x 20000 PNG used to peak at 6.45 GB).

    .venv/bin/python benchmarks/large_image_memory.py --side 20000 [--rgb] [--normalization minmax]
        [--segment models/lite_medsam [--overlay]]

A smooth test pattern (it compresses well, so the file is small) is written by one subprocess; another, started
fresh, reads it with ``read_image`` and runs ``preprocess`` for the model's input (``minmax``: LiteMedSAM at 256,
``sam``: SAM at 1024) and prints its resident-set high-water mark (``ru_maxrss``), with the decoded image's own
size for scale. Each step runs in its own process so that no other allocation (nor this parent's) is counted.
With ``--segment MODEL_DIR`` the whole command also runs, end to end (read to mask written; issue 26: at most
1.5 GB for 20000² grey): ``python -m gmiseg_edge.cli segment --image large.png --box <the middle half>`` in a
process of its own, started by a fresh wrapper process that reports ``ru_maxrss`` of ``RUSAGE_CHILDREN`` (the
command is its only child). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WRITE = """
import sys, cv2, numpy as np
side, rgb, path = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
row = (np.arange(side, dtype=np.uint32) * 255 // max(side - 1, 1)).astype(np.uint8)
image = np.empty((side, side), np.uint8)
for top in range(0, side, 1024):  # diagonal bands
    image[top:top + 1024] = np.roll(row, top)[None, :]
if rgb:
    image = np.dstack([image, image[::-1], 255 - image])
assert cv2.imwrite(path, image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
"""

MEASURE = """
import json, resource, sys, time
from gmiseg_edge.core.transforms import PreprocessConfig, preprocess
from gmiseg_edge.data import read_image
path, normalization = sys.argv[1], sys.argv[2]
config = PreprocessConfig(input_size=256 if normalization == "minmax" else 1024, normalization=normalization)
start_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
image = read_image(path).array
read_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t1 = time.perf_counter()
tensor = preprocess(image, config).tensor
t2 = time.perf_counter()
print(json.dumps({"shape": list(image.shape), "image_mib": image.nbytes / 2**20, "start_mib": start_kib / 1024,
                  "after_read_mib": read_kib / 1024,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "read_s": t1 - t0, "preprocess_s": t2 - t1, "tensor": list(tensor.shape)}))
"""

# runs its arguments as a command and prints the command's peak RSS (KiB): the only child of a fresh process
CHILD_PEAK = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if done.returncode:
    sys.exit(done.stderr[-2000:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=20000, help="image side in pixels")
    parser.add_argument("--rgb", action="store_true", help="a colour image (default: grey)")
    parser.add_argument("--normalization", choices=("minmax", "sam"), default="minmax")
    parser.add_argument("--segment", metavar="MODEL_DIR", default=None,
                        help="also run `gmiseg-edge segment --image large.png --box ...` with this model, end to end")
    parser.add_argument("--overlay", action="store_true", help="with --segment: also write the overlay")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "large.png"
        subprocess.run([sys.executable, "-c", WRITE, str(args.side), "1" if args.rgb else "0", str(path)], check=True)
        run = subprocess.run([sys.executable, "-c", MEASURE, str(path), args.normalization], check=True,
                             capture_output=True, text=True)
        result = json.loads(run.stdout)
        result.update(file_mib=path.stat().st_size / 2**20, normalization=args.normalization)
        if args.segment:
            result.update(segment_end_to_end(path, args.side, args.segment, Path(tmp) / "out", args.overlay))
    print(json.dumps(result, indent=2))
    print(f"{args.side} x {args.side} {'RGB' if args.rgb else 'grey'} PNG, {args.normalization}: peak RSS "
          f"{result['peak_mib']:.0f} MiB (decoded image {result['image_mib']:.0f} MiB, interpreter and imports "
          f"{result['start_mib']:.0f} MiB, after reading {result['after_read_mib']:.0f} MiB)")
    if args.segment:
        print(f"segment end to end (read to mask written{', overlay' if args.overlay else ''}): peak RSS "
              f"{result['segment_peak_mib']:.0f} MiB in {result['segment_s']:.0f} s, mask of "
              f"{result['mask_pixels']} pixels")


def segment_end_to_end(path: Path, side: int, model_dir: str, out: Path, overlay: bool) -> dict:
    """``gmiseg-edge segment`` on ``path`` with a box over its middle half, in a fresh process: its peak RSS."""
    box = f"{side // 4},{side // 4},{3 * side // 4},{3 * side // 4}"
    command = [sys.executable, "-m", "gmiseg_edge.cli", "segment", "--model-dir", model_dir, "--image", str(path),
               "--box", box, "--out", str(out), "--backend", "ort"] + (["--overlay"] if overlay else [])
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", CHILD_PEAK, *command], check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    import cv2

    mask = cv2.imread(str(out / f"{path.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
    return {"segment_peak_mib": int(run.stdout.split()[-1]) / 1024, "segment_s": seconds,
            "mask_pixels": int(np.count_nonzero(mask))}

if __name__ == "__main__":
    main()
