"""Bounded memory of ``segment`` on a large image (issue 26): the whole command, read to mask written, allocates
(tracemalloc, numpy's arrays included) at most a few copies of the decoded image; the 20000² figure itself is
benchmarks/large_image_memory.py --segment (README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from gmiseg_edge.data import Image2D, save_like
from gmiseg_edge.jobs.segment.routes import _save_mask_2d

SIDE = 6000
# the image and its mask, plus what does not grow with the area (the embedding, the post-processing's maps and
# bands, the runtime's own): 3.34 x the image (115 MiB) measured at 6000², 2.95 x at 8000²; before issue 26's fixes
# the mask's two 0/255 copies on writing added 2 x the image (4.7 x at 8000²)
COPIES, FIXED = 2, 80 << 20

CHILD = """
import json, sys, tracemalloc
from gmiseg_edge.cli import app
image, model, out, side = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
box = f"{side // 4},{side // 4},{3 * side // 4},{3 * side // 4}"
tracemalloc.start()
try:
    app(["segment", "--model-dir", model, "--image", image, "--box", box, "--out", out, "--backend", "ort"],
        standalone_mode=False)
finally:
    print(json.dumps({"peak": tracemalloc.get_traced_memory()[1]}))
"""


def test_a_large_image_is_segmented_within_a_few_copies_of_itself(tmp_path, exported_models):
    row = (np.arange(SIDE, dtype=np.uint32) * 255 // (SIDE - 1)).astype(np.uint8)
    image = np.broadcast_to(row, (SIDE, SIDE)).copy()
    path = tmp_path / "large.png"
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    model = exported_models("lite_medsam").folder
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(model), str(tmp_path / "out"), str(SIDE)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    peak = json.loads(done.stdout.strip().splitlines()[-1])["peak"]
    assert peak <= COPIES * image.nbytes + FIXED, f"{peak / 2**20:.0f} MiB for a {image.nbytes / 2**20:.0f} MiB image"
    mask = cv2.imread(str(tmp_path / "out" / "large_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == image.shape and set(np.unique(mask)) <= {0, 255}
    assert mask[SIDE // 2, SIDE // 2] == 255 and mask[0, 0] == 0  # the box's middle, and outside it


def test_a_bool_mask_is_written_in_place_as_save_like_writes_it_and_given_back(tmp_path):
    reference = Image2D(array=np.zeros((40, 50), np.uint8), path=Path("x.png"))
    mask = np.zeros((40, 50), bool)
    mask[5:20, 10:30] = True
    kept = mask.copy()
    _save_mask_2d(reference, mask, tmp_path / "a.png")
    save_like(reference, kept, tmp_path / "b.png")
    assert mask.dtype == bool and np.array_equal(mask, kept) and mask.view(np.uint8).max() == 1
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
