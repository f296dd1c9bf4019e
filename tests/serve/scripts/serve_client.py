"""Client side of the serving tests, run in the serving environment (tritonclient): prints one JSON line.

    serve_client.py checks URL CASES.npz OUT.npz   requests, a small concurrency check, refused inputs
    serve_client.py load URL CASES.npz SECONDS     4 threads of segment/decode until SECONDS pass (the server
                                                   may be killed meanwhile): counts of right, wrong, failed
    serve_client.py decode URL CASES.npz OUT.npz   decode with the keys in CASES.npz only (after a restart)
    serve_client.py oversized URL ROUNDS           encode and segment of a 4097x4097 image, ROUNDS times each

CASES.npz holds image_<i>, box_<i>, point_<i> and (for load) ref_<i>: the in-process masks of the boxes.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gmiseg_edge.serve.client import SegmentClient, ServerError, ServerUnavailableError


def cases(path: str) -> list[dict[str, np.ndarray]]:
    with np.load(path) as data:
        count = len([k for k in data.files if k.startswith("image_")])
        return [{k.rsplit("_", 1)[0]: data[k] for k in data.files if k.endswith(f"_{i}")} for i in range(count)]


def refused(call) -> str:
    try:
        call()
    except ServerError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ACCEPTED"


def raw_refusal(client: SegmentClient, model: str, inputs: dict[str, np.ndarray]) -> dict[str, str]:
    """Status and message a plain tritonclient (not SegmentClient, which checks some inputs before sending) gets
    for ``inputs`` sent as given."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    tensors = []
    for name, value in inputs.items():
        tensor = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    try:
        client._client.infer(model, tensors)
    except Exception as exc:  # tritonclient's InferenceServerException
        return {"status": str(exc.status()), "message": str(exc.message())}
    return {"status": "ACCEPTED", "message": ""}


def checks(url: str, cases_path: str, out: str) -> dict:
    items = cases(cases_path)
    masks: dict[str, np.ndarray] = {}
    report: dict = {"keys": [], "errors": {}}
    with SegmentClient(url) as client:
        report["ready"] = client.ready()
        for i, case in enumerate(items):
            key = client.encode(case["image"])
            report["keys"].append(key)
            masks[f"decode_box_{i}"] = client.decode(key, box=case["box"]).mask
            masks[f"decode_point_{i}"] = client.decode(key, points=case["point"][None], labels=[1]).mask
            segmented = client.segment(case["image"], box=case["box"])
            masks[f"segment_box_{i}"] = segmented.mask
            report.setdefault("segment_keys", []).append(segmented.key)

        def concurrent(j: int) -> np.ndarray:
            with SegmentClient(url) as own:
                case = items[j % len(items)]
                return own.segment(case["image"], box=case["box"]).mask

        with ThreadPoolExecutor(4) as pool:
            for j, mask in enumerate(pool.map(concurrent, range(8))):
                masks[f"concurrent_{j}"] = mask
        image, key = items[0]["image"], report["keys"][0]
        raw = client.infer_raw
        report["errors"] = {
            "float image": refused(lambda: raw("encode", {"image": image[None, :, :, None].astype(np.float32)})),
            "2 channels": refused(lambda: raw("encode", {"image": np.zeros((1, 8, 8, 2), np.uint8)})),
            "no batch dim": refused(lambda: raw("encode", {"image": image[:4, :5]})),
            "malformed key": refused(lambda: client.decode("not-a-key", box=[1, 1, 5, 5])),
            "unknown key": refused(lambda: client.decode("0" * 64 + "-10x10", box=[1, 1, 5, 5])),
            "point outside": refused(lambda: client.decode(key, points=[[1e5, 3]], labels=[1])),
            "labels mismatch": refused(lambda: client.decode(key, points=[[3, 3], [4, 4]], labels=[1])),
            "empty prompt": refused(lambda: client.decode(key)),
            "unknown support": refused(lambda: client.segment_support(items[1]["image"], "spleen")),
            "zero spacing": refused(lambda: client.segment_support(items[1]["image"], "liver", spacing=(0.0, 1.0))),
            "unknown decoder": refused(lambda: client.decode(key, box=[1, 1, 5, 5], decoder="nope")),
            "box float64": refused(lambda: raw("decode", {"key": np.asarray([key.encode()], dtype=object),
                                                          "box": np.asarray([1, 1, 5, 5], np.float64)})),
        }
        report["errors"]["empty image"] = refused(lambda: client.segment(np.zeros((0, 0), np.uint8), box=[1, 1, 5, 5]))
        report["errors"]["zero points"] = refused(lambda: client.decode(key, points=np.zeros((0, 2)), labels=[]))
        box = np.asarray([1, 1, 5, 5], np.float32)
        report["raw"] = {
            "malformed key": raw_refusal(client, "decode", {"key": np.asarray([b"not-a-key"], dtype=object),
                                                            "box": box}),
            "empty image": raw_refusal(client, "segment", {"image": np.zeros((0, 0, 1), np.uint8), "box": box}),
            "zero points": raw_refusal(client, "decode", {"key": np.asarray([key.encode()], dtype=object),
                                                          "points": np.zeros((0, 2), np.float32),
                                                          "labels": np.zeros(0, np.float32)}),
            "too many points": raw_refusal(client, "decode", {"key": np.asarray([key.encode()], dtype=object),
                                                              "points": np.full((65, 2), 3, np.float32),
                                                              "labels": np.ones(65, np.float32)}),
            "unknown key": raw_refusal(client, "decode", {"key": np.asarray([b"0" * 64 + b"-10x10"], dtype=object),
                                                          "box": box}),
            "support query too large": raw_refusal(client, "segment_support", {
                "image": image[:, :, None] if image.ndim == 2 else image,
                "support": np.asarray([b"liver"], dtype=object)}),
        }
        masks["after_errors_0"] = client.decode(key, box=items[0]["box"]).mask
        masks["support_liver"] = client.segment_support(items[1]["image"], "liver").mask
        # the PNG example has no pixel size (1 mm): a query stated at 1 mm gets the same answer through 'spacing'
        masks["support_liver_mm"] = client.segment_support(items[1]["image"], "liver", spacing=(1.0, 1.0)).mask
    np.savez_compressed(out, **masks)
    return report


def oversized(url: str, rounds: int) -> dict:
    """``rounds`` times: encode and segment (with a box) of a 4097x4097 image, one pixel side over the default
    limit (16 MiB each), sent as given; each refusal's status and message."""
    image = np.zeros((4097, 4097, 1), np.uint8)
    box = np.asarray([1, 1, 5, 5], np.float32)
    refusals = []
    with SegmentClient(url) as client:
        for _ in range(rounds):
            refusals.append(raw_refusal(client, "encode", {"image": image[None]}))
            refusals.append(raw_refusal(client, "segment", {"image": image, "box": box}))
    return {"refusals": refusals}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def load(url: str, cases_path: str, seconds: float) -> dict:
    items = cases(cases_path)
    with SegmentClient(url) as client:
        keys = [client.encode(case["image"]) for case in items]
    counts = {"right": 0, "wrong": 0, "failed": 0, "unavailable": 0}
    first_error: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    print(json.dumps({"started": True, "keys": keys}), flush=True)

    def worker(w: int) -> None:
        client = SegmentClient(url, timeout_s=10)
        n = 0
        while time.monotonic() < deadline:
            i = (w + n) % len(items)
            try:
                if n % 2:
                    mask = client.decode(keys[i], box=items[i]["box"]).mask
                else:
                    mask = client.segment(items[i]["image"], box=items[i]["box"]).mask
                outcome = "right" if dice(mask, items[i]["ref"]) >= 0.999 else "wrong"
            except ServerUnavailableError as exc:
                outcome = "unavailable"
                message = str(exc)
            except ServerError as exc:
                outcome = "failed"
                message = str(exc)
            with lock:
                counts[outcome] += 1
                if outcome in ("failed", "unavailable") and not first_error:
                    first_error.append(message[:300])
            if outcome in ("failed", "unavailable"):
                time.sleep(0.05)
            n += 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"counts": counts, "first_error": first_error[0] if first_error else "", "keys": keys}


def decode_keys(url: str, cases_path: str, out: str) -> dict:
    items = cases(cases_path)
    with SegmentClient(url) as client:
        masks = {f"decode_box_{i}": client.decode(str(case["key"]), box=case["box"]).mask
                 for i, case in enumerate(items)}
    np.savez_compressed(out, **masks)
    return {"decoded": len(masks)}


if __name__ == "__main__":
    mode, url, path, extra = [*sys.argv[1:], ""][:4]
    if mode == "checks":
        result = checks(url, path, extra)
    elif mode == "oversized":
        result = oversized(url, int(path))
    elif mode == "load":
        result = load(url, path, float(extra))
    else:
        result = decode_keys(url, path, extra)
    print(json.dumps(result), flush=True)
