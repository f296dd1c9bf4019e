"""Peak memory of reading and preprocessing one large PNG (issue 12: a 20000 x 20000 PNG used to peak at 6.45 GB).

    .venv/bin/python benchmarks/large_image_memory.py --side 20000 [--rgb] [--normalization minmax]

A smooth test pattern (it compresses well, so the file is small) is written by one subprocess; another, started
fresh, reads it with ``read_image`` and runs ``preprocess`` for the model's input (``minmax``: LiteMedSAM at 256,
``sam``: SAM at 1024) and prints its resident-set high-water mark (``ru_maxrss``), with the decoded image's own
size for scale. Each step runs in its own process so that no other allocation (nor this parent's) is counted.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=20000, help="image side in pixels")
    parser.add_argument("--rgb", action="store_true", help="a colour image (default: grey)")
    parser.add_argument("--normalization", choices=("minmax", "sam"), default="minmax")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "large.png"
        subprocess.run([sys.executable, "-c", WRITE, str(args.side), "1" if args.rgb else "0", str(path)], check=True)
        run = subprocess.run([sys.executable, "-c", MEASURE, str(path), args.normalization], check=True,
                             capture_output=True, text=True)
        result = json.loads(run.stdout)
        result.update(file_mib=path.stat().st_size / 2**20, normalization=args.normalization)
    print(json.dumps(result, indent=2))
    print(f"{args.side} x {args.side} {'RGB' if args.rgb else 'grey'} PNG, {args.normalization}: peak RSS "
          f"{result['peak_mib']:.0f} MiB (decoded image {result['image_mib']:.0f} MiB, interpreter and imports "
          f"{result['start_mib']:.0f} MiB, after reading {result['after_read_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
