"""DICOM I/O cost: reading a CT series (pydicom) and writing / reading back its DICOM-SEG (highdicom).

    PYTHONPATH=. .venv/bin/python benchmarks/dicom_io.py --runs 5

The series are written from the shipped CT NIfTI by the tests' helper (tests/dicom_series.py): the test crop
(64 x 64 x 12) and the whole volume (122 x 101 x 30), plus an RLE-compressed copy of the whole volume. Each
step runs ``--runs`` times after one untimed warm-up (imports, first file-system reads); the table gives the
median wall time and the median CPU time of this process (the CPU time is the better figure on a shared
machine, where wall time also counts other processes' turns).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import RLELossless

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gmiseg_edge.data import read_image
from gmiseg_edge.data.dicom_seg import SegAlgorithm, read_dicom_seg, write_dicom_seg
from tests.dicom_series import sample_ct, write_series

FULL = (slice(None), slice(None), slice(None))


def timed(step, runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``step()`` over ``runs`` runs after one warm-up."""
    step()
    wall, cpu = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dicom_io_"))
    try:
        rows = []
        for name, crop in (("test crop", None), ("whole volume", FULL)):
            hu, affine, labels = sample_ct() if crop is None else sample_ct(crop)
            folder = root / name.replace(" ", "_")
            write_series(folder, hu, affine)
            rows.append((f"read series, {name} {hu.shape}", *timed(lambda f=folder: read_image(f), args.runs)))
            volume = read_image(folder)
            assert np.array_equal(volume.array, hu)
            mask = (labels == 5).astype(np.uint8) + 2 * (labels == 1)
            seg = root / f"{folder.name}_seg.dcm"
            rows.append((f"write DICOM-SEG (2 segments), {name}", *timed(
                lambda v=volume, m=mask, s=seg: write_dicom_seg(v, m, s, {1: "liver", 2: "spleen"},
                                                               SegAlgorithm("gmiseg-edge lite_medsam", "0.1.0")),
                args.runs)))
            rows.append((f"read DICOM-SEG back, {name}", *timed(lambda s=seg, v=volume: read_dicom_seg(s, v),
                                                                 args.runs)))
            assert np.array_equal(read_dicom_seg(seg, volume), mask)
        rle = root / "whole_volume_rle"
        shutil.copytree(root / "whole_volume", rle)
        for path in rle.iterdir():
            ds = pydicom.dcmread(path)
            ds.compress(RLELossless)
            ds.save_as(path)
        rows.append(("read series, whole volume, RLE Lossless", *timed(lambda: read_image(rle), args.runs)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"| step | wall ms (median of {args.runs}) | CPU ms (this process) |")
    print("| --- | --- | --- |")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall * 1000:.0f} | {cpu * 1000:.0f} |")


if __name__ == "__main__":
    main()
