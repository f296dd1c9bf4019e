"""The napari plugin, measured through its own widget in a real viewer (Xvfb when there is no display).

1. Click-to-mask (the widget's partial Labels write and the former whole-layer refresh, interleaved click by
   click): on an encoded slice of the shipped CT (liver box), a click added to the Points layer runs the
   widget's handler: decoder (with the previous mask as mask_input), the write into the Labels layer ("write");
   timed to the Labels layer written ("labels") and to the canvas drawn after it (``processEvents``, "drawn").
   Each click is removed again (also a decoder run, not counted).
2. UI thread while encoding: a 5 ms QTimer on the UI thread while the widget encodes a new slice in its worker;
   the longest gap between two ticks after the move to the slice is the longest the UI was blocked while encoding;
   the first gap (the move: napari's slicing and redraw) is reported apart, beside a control move to an encoded
   slice (no encoding). The widget's progress bar and Qt's animated busy bar (the former one) interleaved.
3. The CVPR 2025 interactive protocol, slice-level, through the plugin's code path (the reader, the window, the
   Shapes/Points layers, the widget's decode and paste): on each shipped volume's structure, the slice of largest
   area (axis 2): one box (the label's extent), then up to 5 corrective clicks, each at the centre (the point
   farthest from its border) of the largest connected error region, positive when it is missed structure,
   negative when it is a false positive; Dice after each step. With and without the previous mask as mask_input.

    PYTHONPATH=. python benchmarks/viewer_latency.py --model-dir runs/lite_medsam [--clicks 60] [--threads 2]
        [--latency-only] [--paths partial,full] [--bars step,busy]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.data import read_volume, sample_data_dir, sample_index, select_label
from gmiseg_edge.metrics import dice

CT = "totalsegmentator/example_ct_sm.nii.gz"
CT_LABELS = "totalsegmentator/example_seg.nii.gz"
LIVER, SEED = 5, 24


def _display() -> contextlib.AbstractContextManager:
    if os.environ.get("DISPLAY"):
        return contextlib.nullcontext()
    from pyvirtualdisplay import Display

    return Display(visible=False, size=(1400, 900))


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def rectangle(k: int, box) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([[k, y0, x0], [k, y0, x1], [k, y1, x1], [k, y1, x0]])


def corrective_click(truth: np.ndarray, pred: np.ndarray) -> tuple[int, int, bool] | None:
    """(row, col, positive) at the centre of the largest connected error region, None when there is no error."""
    best = None
    for positive, error in ((True, truth & ~pred), (False, pred & ~truth)):
        components, count = ndimage.label(error)
        if not count:
            continue
        sizes = ndimage.sum_labels(error, components, index=np.arange(1, count + 1))
        k = int(np.argmax(sizes)) + 1
        if best is None or sizes[k - 1] > best[0]:
            best = (sizes[k - 1], components == k, positive)
    if best is None:
        return None
    region = np.pad(best[1], 1)
    distance = ndimage.distance_transform_edt(region)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(row), int(col), best[2]


class Session:
    """A napari viewer with the plugin's widget, the model loaded once."""

    def __init__(self, model_dir: Path, threads: int | None, cache_dir: Path | None) -> None:
        import napari
        from qtpy.QtWidgets import QApplication

        from gmiseg_edge.viewer.widget import SegmentWidget

        self.viewer = napari.Viewer(show=True)
        self.app = QApplication.instance()
        self.widget = SegmentWidget(self.viewer)
        self.viewer.window.add_dock_widget(self.widget)
        self.model_dir, self.threads, self.cache_dir = model_dir, threads, cache_dir

    def open(self, path: Path, window: str, k: int) -> None:
        from gmiseg_edge.viewer.reader import read_layers

        name = f"{path.parent.name}/{path.name}"
        if name not in [layer.name for layer in self.viewer.layers]:  # each scan once (layers are not removed)
            data, kwargs, _ = read_layers(path)[0]
            self.viewer.add_image(data, **{**kwargs, "name": name})
        for layer in self.viewer.layers:  # only this scan's layers on screen
            layer.visible = layer.name.startswith(name)
        self.widget.set_window(window)
        self.widget.set_image(name)
        layer = self.viewer.layers[name]
        self.viewer.dims.set_point(0, layer.data_to_world([k, 0, 0])[0])  # data slice k (layers differ in scale)
        if self.widget.engine is None and not self.widget.load_model(self.model_dir, backend="ort",
                                                                      threads=self.threads, cache_dir=self.cache_dir):
            raise SystemExit(self.widget.messages[-1][1])
        self.wait_encoded(k)

    def wait_encoded(self, k: int, timeout_s: float = 600) -> None:
        self.widget.request_encode(k)
        deadline = time.monotonic() + timeout_s
        while not self.widget.is_encoded(k) and time.monotonic() < deadline:
            self.app.processEvents()
            time.sleep(0.002)

    def close(self) -> None:
        self.widget.wait_for_jobs()  # no encode left running into the closing engine
        self.viewer.close()


PATHS = {"partial": True, "full": False}  # the Labels write: changed pixels only (data_setitem), or whole refresh


def summary(values) -> dict:
    return {"p50_ms": round(percentile(values, 50), 1), "p95_ms": round(percentile(values, 95), 1),
            "max_ms": round(percentile(values, 100), 1)}


def click_latency(session: Session, clicks: int, seed: int, paths: list[str]) -> dict:
    """Each click (same random sequence for every path) written by each of ``paths`` in turn, the order
    alternating click by click (ABBA...), so a change of machine load hits every path alike."""
    widget = session.widget
    session.open(sample_data_dir() / CT, "abdomen", SEED)
    truth = np.transpose(read_volume(sample_data_dir() / CT_LABELS).array, (2, 1, 0))[SEED] == LIVER
    widget.boxes_layer.add(rectangle(SEED, box_from_mask(truth)), shape_type="rectangle")
    session.app.processEvents()
    rows, cols = np.nonzero(truth)
    rng = np.random.default_rng(seed)
    times: dict[str, dict[str, list[float]]] = {p: {"labels": [], "drawn": [], "widget_decode": [], "write": []}
                                                for p in paths}
    for n in range(clicks):
        i = int(rng.integers(len(rows)))
        for path in paths if n % 2 == 0 else paths[::-1]:
            widget.partial_labels_update = PATHS[path]
            t0 = time.perf_counter()
            widget.clicks_layer.add(np.array([[SEED, rows[i], cols[i]]], np.float64))
            t1 = time.perf_counter()
            session.app.processEvents()
            t2 = time.perf_counter()
            for name, value in (("labels", t1 - t0), ("drawn", t2 - t0), ("widget_decode", widget.last_decode_s),
                                ("write", widget.last_write_s)):
                times[path][name].append(value)
            widget.clicks_layer.data = widget.clicks_layer.data[:0]
            session.app.processEvents()
    widget.partial_labels_update = True
    result: dict = {"clicks": clicks, "order": "interleaved ABBA" if len(paths) > 1 else paths[0]}
    for path in paths:
        result[path] = {name: summary(values) for name, values in times[path].items()}
    if len(paths) == 2:
        new, old = paths
        result[f"ratio_{new}_over_{old}"] = {
            name: {q: round(result[new][name][q] / result[old][name][q], 3) for q in ("p50_ms", "p95_ms")}
            for name in times[new]}
    return result


def _gaps(session: Session, k: int, until) -> np.ndarray:
    """Gaps (s) between the ticks of a 5 ms QTimer on the UI thread, from moving to slice ``k`` until ``until()``;
    the first gap holds the move itself (napari's slicing and the canvas's redraw)."""
    from qtpy.QtCore import QTimer

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    t0 = time.perf_counter()
    session.viewer.dims.set_current_step(0, k)  # the widget starts encoding the slice in its worker (if new)
    while not until():
        session.app.processEvents()
        time.sleep(0.001)
    timer.stop()
    return np.diff([t0, *ticks])


def ui_block(session: Session, slices: list[int], bars: list[str]) -> dict:
    """The longest UI-thread gaps while the widget encodes each of ``slices``, the progress-bar variants
    interleaved slice by slice: "step" (the widget's 0-of-1 bar) and "busy" (Qt's animated busy bar, range 0..0,
    the former one, set here once the encode started). Each encode is followed by a control: a move back to an
    encoded slice and 1 s of idle UI, no encoding (the move's own cost)."""
    widget = session.widget
    rows: dict[str, dict[str, list[float]]] = {bar: {"move": [], "while_encoding": [], "encode_s": []}
                                               for bar in bars}
    control_move, control_idle = [], []
    for n, k in enumerate(slices):
        bar = bars[n % len(bars)]

        def encoded(k=k, bar=bar) -> bool:
            if bar == "busy" and widget.progress_bar.maximum() != 0 and not widget.is_encoded(k):
                widget.progress_bar.setRange(0, 0)
            return widget.is_encoded(k)

        t0 = time.perf_counter()
        gaps = _gaps(session, k, encoded)
        rows[bar]["encode_s"].append(time.perf_counter() - t0)
        rows[bar]["move"].append(gaps[0])
        rows[bar]["while_encoding"].append(gaps[1:].max() if len(gaps) > 1 else float("nan"))
        widget.progress_bar.setRange(0, 1)
        end = time.perf_counter() + 1.0
        gaps = _gaps(session, SEED, lambda end=end: time.perf_counter() > end)
        control_move.append(gaps[0])
        control_idle.append(gaps[1:].max())
    ms = lambda values: [round(1000 * v, 1) for v in values]  # noqa: E731
    result: dict = {"slices": slices, "order": "interleaved" if len(bars) > 1 else bars[0]}
    for bar in bars:
        result[bar] = {"max_gap_while_encoding_ms": ms(rows[bar]["while_encoding"]),
                       "move_gap_ms": ms(rows[bar]["move"]),
                       "encode_s": [round(v, 2) for v in rows[bar]["encode_s"]]}
    result["control_no_encoding"] = {"move_gap_ms": ms(control_move), "max_gap_idle_ms": ms(control_idle)}
    return result


def volume_cases() -> list[dict]:
    cases = []
    for entry in sample_index():
        if not entry["image"].endswith((".nrrd", ".nii.gz", ".nii")):  # the volumes
            continue
        for label, value in entry["labels"].items():
            cases.append({"name": f"{entry['name']}/{label}", "image": sample_data_dir() / entry["image"],
                          "mask": sample_data_dir() / entry["mask"], "value": value,
                          "window": entry["window"]})
    return cases


def protocol(session: Session, max_clicks: int, previous_mask: bool) -> list[dict]:
    widget = session.widget
    widget.previous_check.setChecked(previous_mask)
    rows = []
    for case in volume_cases():
        truth_volume = np.transpose(select_label(read_volume(case["mask"]).array, case["value"]), (2, 1, 0))
        k = int(np.argmax(truth_volume.sum(axis=(1, 2))))
        truth = truth_volume[k]
        session.open(case["image"], case["window"] if isinstance(case["window"], str) else
                     ",".join(map(str, case["window"])), k)
        widget.new_object()
        widget.labels_layer.data[k] = 0  # a fresh slice for each run (objects keep their labels otherwise)
        widget.labels_layer.refresh()
        widget.boxes_layer.add(rectangle(k, box_from_mask(truth)), shape_type="rectangle")
        label = widget.object_spin.value()
        scores = [dice(widget.labels_layer.data[k] == label, truth)]
        for _ in range(max_clicks):
            click = corrective_click(truth, widget.labels_layer.data[k] == label)
            if click is None:
                scores.append(scores[-1])
                continue
            row, col, positive = click
            widget.negative_check.setChecked(not positive)
            widget.clicks_layer.add(np.array([[k, row, col]], np.float64))
            scores.append(dice(widget.labels_layer.data[k] == label, truth))
        widget.negative_check.setChecked(False)
        rows.append({"case": case["name"], "slice": k, "dice": [round(float(s), 4) for s in scores]})
        print(f"  {case['name']:28s} slice {k:3d}: " + " ".join(f"{s:.3f}" for s in scores), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--clicks", type=int, default=60)
    parser.add_argument("--max-corrections", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=None, help="disk embedding cache (the protocol's slices)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocol-only", action="store_true", help="skip the latency and UI-block parts")
    parser.add_argument("--latency-only", action="store_true", help="skip the interactive protocol")
    parser.add_argument("--paths", default="partial,full",
                        help="Labels write paths, interleaved: partial (changed pixels), full (whole refresh)")
    parser.add_argument("--bars", default="step,busy",
                        help="progress bars while encoding, interleaved: step (the widget's), busy (Qt's animated)")
    parser.add_argument("--mask-input", choices=("both", "on", "off"), default="both",
                        help="protocol runs with / without the previous mask as mask_input")
    args = parser.parse_args()
    with _display():
        results: dict = {"load_average": os.getloadavg()}
        session = Session(args.model_dir, args.threads, None)  # in-memory cache only: the encodes are real
        try:
            if not args.protocol_only:
                results["click_to_mask"] = click_latency(session, args.clicks, args.seed, args.paths.split(","))
                print("click-to-mask", json.dumps(results["click_to_mask"]), flush=True)
                results["ui_block"] = ui_block(session, [SEED - 12, SEED - 9, SEED - 6, SEED - 3, SEED + 3, SEED + 5],
                                               args.bars.split(","))
                print("UI block while encoding", json.dumps(results["ui_block"]), flush=True)
            if not args.latency_only:
                session.cache_dir = args.cache_dir
                session.widget.load_model(args.model_dir, backend="ort", threads=args.threads, cache_dir=args.cache_dir)
                for previous in {"both": (True, False), "on": (True,), "off": (False,)}[args.mask_input]:
                    print(f"interactive protocol, previous mask as mask_input: {previous}", flush=True)
                    rows = protocol(session, args.max_corrections, previous)
                    mean = np.mean([r["dice"] for r in rows], axis=0)
                    print("  mean " + " ".join(f"{s:.3f}" for s in mean), flush=True)
                    results[f"protocol_mask_input_{previous}"] = {"cases": rows,
                                                                  "mean": [round(float(m), 4) for m in mean]}
        finally:
            session.close()
        results["load_average_end"] = os.getloadavg()
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
