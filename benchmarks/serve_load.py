"""Load test of `gmiseg-edge serve` (a real Triton server through PyTriton) against the in-process runtime, on
loopback only, bounded in count and time. Run it in the serving environment (tritonclient, PyTriton):

    PYTHONPATH=. .venv-serve/bin/python benchmarks/serve_load.py --model-dir models/lite_medsam --json serve.json

1. Mixed load: C clients (threads, one gRPC channel each) x R requests, each client cycling encode (a new image),
   decode (a box on that image's key) and segment (a box; every other one on a new image). The same request lists
   run first in process (C threads on one Predictor) and then against the server: every served mask is compared
   with the in-process mask of the same request (Dice), every request is accounted for (nothing lost), and the
   latency percentiles and throughput of both are reported side by side.
2. Dynamic batching: C clients sending encode requests of new same-shaped images, against a server started with
   --max-batch 1 and one with --max-batch 8: encoder throughput, and the mean batch Triton formed (its metrics:
   requests / executions of the encode model).
3. SIGKILL in mid-load: the mixed load again; the server's process group is killed after --kill-after seconds.
   Every answer before the kill must be right, and after it only errors; a restarted server on the same disk
   cache must answer decode requests for keys given out before the kill (the in-memory cache died with it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.data.samples import load_sample_cases
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime import load
from gmiseg_edge.serve.bench import variant
from gmiseg_edge.serve.client import SegmentClient, ServerError

REPO = Path(__file__).resolve().parents[1]
OPS = ("encode", "decode", "segment", "segment_new")


# ---------------------------------------------------------------------------------------------- workload

CYCLE = ("encode", "decode", "decode", "decode", "segment", "decode", "decode", "segment_new", "decode", "decode")


def workload(clients: int, requests: int, seed: int) -> list[list[dict]]:
    """Per client, ``requests`` operations in cycles of :data:`CYCLE`, like a viewer: a new image is encoded, then
    clicked on (decode: boxes and points in turn), segmented in one call (its embedding cached), and once a cycle a
    new image is segmented in one call (encode + decode). Images are sample slices made unique per client and
    cycle (:func:`~gmiseg_edge.serve.bench.variant`)."""
    cases = [c for c in load_sample_cases() if c.mask.any()]
    lists = []
    for c in range(clients):
        ops = []
        for i in range(requests):
            k, kind = i // len(CYCLE), CYCLE[i % len(CYCLE)]
            case = cases[(c + k) % len(cases)]
            rows, cols = np.nonzero(case.mask)
            point = np.array([[cols[len(cols) // 2], rows[len(rows) // 2]]], np.float32)
            prompt = {"box": box_from_mask(case.mask)} if i % 2 else {"points": point, "labels": [1]}
            fresh = kind == "segment_new"
            image = variant(case.image, seed + 100_000 * c + 2 * k + (1 if fresh else 0))
            ops.append({"op": kind, "image": image, "prompt": prompt, "k": k})
        lists.append(ops)
    return lists


def percentiles(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1e3
    return {"n": len(values), "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max())} if values else {"n": 0}


def summary(records: list[dict], seconds: float) -> dict:
    out = {"seconds": seconds, "requests": len(records), "requests_per_s": len(records) / seconds}
    for op in OPS:
        out[op] = percentiles([r["s"] for r in records if r["op"] == op and r.get("error") is None])
    return out


# ---------------------------------------------------------------------------------------------- in process

def run_in_process(model_dir: Path, lists: list[list[dict]], threads: int | None) -> tuple[dict, dict]:
    predictor = load(model_dir, backend="ort", threads=threads)
    masks: dict[tuple[int, int], np.ndarray] = {}
    records: list[dict] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        encoded = {}
        for i, req in enumerate(lists[c]):
            t0 = time.perf_counter()
            if req["op"] == "encode":
                encoded[req["k"]] = predictor.encode(req["image"])
                mask = None
            elif req["op"] == "decode":
                mask = predictor.predict(encoded[req["k"]], **req["prompt"]).mask
            else:
                mask = predictor.predict(req["image"], **req["prompt"]).mask
            seconds = time.perf_counter() - t0
            with lock:
                records.append({"op": req["op"], "s": seconds})
                if mask is not None:
                    masks[(c, i)] = mask

    warm = lists[0][0]
    predictor.predict(variant(warm["image"], 999_999), **warm["prompt"])  # first runs are slower: not timed
    predictor.cache.reset_stats()
    start = time.perf_counter()
    with ThreadPoolExecutor(len(lists)) as pool:
        list(pool.map(client, range(len(lists))))
    result = summary(records, time.perf_counter() - start)
    result["encoder_runs"] = predictor.stats.encoder_runs
    predictor.close()
    return result, masks


# ---------------------------------------------------------------------------------------------- server

def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Server:
    """`gmiseg-edge serve` on loopback in a process group of its own."""

    def __init__(self, model_dir: Path, cache_dir: Path, log: Path, extra: list[str]) -> None:
        self.http, self.grpc, self.metrics = free_ports(3)
        self.log = log
        command = [sys.executable, "-m", "gmiseg_edge.cli", "serve", "--model-dir", str(model_dir), "--backend", "ort",
                   "--http-port", str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics),
                   "--cache-dir", str(cache_dir), *extra]
        self.shm_before = {p.name for p in Path("/dev/shm").glob("psm_*")}
        with open(log, "ab") as handle:
            self.proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
        start = time.monotonic()
        with SegmentClient(self.url) as probe:
            while not probe.ready():
                if self.proc.poll() is not None or time.monotonic() - start > 180:
                    raise SystemExit(f"server did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.25)
        self.startup_s = time.monotonic() - start

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def counters(self) -> dict[str, float]:
        """Triton's per-model request and execution counts (Prometheus)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=10) as response:
            text = response.read().decode()
        counts: dict[str, float] = {}
        for line in text.splitlines():
            for metric in ("nv_inference_request_success", "nv_inference_exec_count", "nv_inference_count"):
                if line.startswith(metric + "{"):
                    model = line.split('model="', 1)[1].split('"', 1)[0]
                    name = f"{metric}:{model}"
                    counts[name] = counts.get(name, 0) + float(line.rsplit(" ", 1)[1])
        return counts

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        mapped = set()  # what a killed server cannot remove: PyTriton's blocks and Python's psm_* made meanwhile
        for maps in Path("/proc").glob("[0-9]*/maps"):
            try:
                mapped.update(line.split()[-1] for line in maps.read_text().splitlines() if "/dev/shm/" in line)
            except OSError:
                continue
        for path in Path("/dev/shm").glob("*"):
            if path.name.startswith(f"pytrtion{self.proc.pid}-") or (
                    path.name.startswith("psm_") and path.name not in self.shm_before and str(path) not in mapped):
                path.unlink(missing_ok=True)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


def warm_up(url: str, lists: list[list[dict]]) -> None:
    """One untimed segment call on an image outside the workload (the server's first runs are slower)."""
    with SegmentClient(url) as api:
        api.segment(variant(lists[0][0]["image"], 999_998), **lists[0][0]["prompt"])


def run_served(url: str, lists: list[list[dict]], deadline: float, answered: list[int] | None = None) -> dict:
    """Every client's requests against the server; each record: op, seconds, mask or error. ``answered`` (one
    int) counts the answers as they come."""
    results: dict[tuple[int, int], dict] = {}
    keys: dict[tuple[int, int], str] = {}
    lock = threading.Lock()

    def client(c: int) -> None:
        own: dict[int, str] = {}
        with SegmentClient(url, timeout_s=60) as api:
            for i, req in enumerate(lists[c]):
                if time.monotonic() > deadline:
                    record = {"op": req["op"], "error": "not sent (time bound)"}
                else:
                    t0 = time.perf_counter()
                    try:
                        mask = None
                        if req["op"] == "encode":
                            own[req["k"]] = api.encode(req["image"])
                            with lock:
                                keys[(c, req["k"])] = own[req["k"]]
                        elif req["op"] == "decode":
                            if req["k"] not in own:
                                raise ServerError("decode skipped: its encode failed")
                            mask = api.decode(own[req["k"]], **req["prompt"]).mask
                        else:
                            mask = api.segment(req["image"], **req["prompt"]).mask
                        record = {"op": req["op"], "s": time.perf_counter() - t0, "mask": mask, "error": None,
                                  "t": time.monotonic()}
                    except ServerError as exc:
                        record = {"op": req["op"], "error": str(exc)[:200], "t": time.monotonic()}
                with lock:
                    results[(c, i)] = record
                    if answered is not None and record.get("error") is None:
                        answered[0] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(len(lists)) as pool:
        list(pool.map(client, range(len(lists))))
    return {"records": results, "keys": keys, "seconds": time.perf_counter() - start}


def compare(served: dict, reference: dict[tuple[int, int], np.ndarray]) -> dict:
    dices, wrong, errors = [], [], 0
    for index, record in served["records"].items():
        if record.get("error") is not None:
            errors += 1
        elif record.get("mask") is not None:
            d = dice(record["mask"], reference[index])
            dices.append(d)
            if d < 0.999:
                wrong.append({"request": list(index), "dice": d})
    return {"masks_compared": len(dices), "min_dice": min(dices) if dices else None, "wrong": wrong,
            "errors": errors}


# ---------------------------------------------------------------------------------------------- phases

def mixed_load(args, root: Path, lists, reference, in_process) -> dict:
    server = Server(args.model_dir, root / "cache-mixed", root / "mixed.log", [])
    try:
        warm_up(server.url, lists)
        before = server.counters()
        served = run_served(server.url, lists, time.monotonic() + args.max_seconds)
        after = server.counters()
        counters = {name: after[name] - before.get(name, 0) for name in after}
    finally:
        code = server.stop()
    records = [r for r in served["records"].values()]
    ok = [r for r in records if r.get("error") is None]
    result = {"startup_s": server.startup_s, "sigterm_exit_code": code,
              "sent": len(records), "answered": len(ok), "expected": sum(len(x) for x in lists),
              "accuracy": compare(served, reference),
              "served": summary(ok, served["seconds"]), "in_process": in_process,
              "encode_mean_batch": counters.get("nv_inference_count:encode", 0) /
              max(counters.get("nv_inference_exec_count:encode", 0), 1)}
    result["throughput_served_over_in_process"] = (result["served"]["requests_per_s"]
                                                   / in_process["requests_per_s"])
    return result


def batching_effect(args, root: Path) -> dict:
    case = next(c for c in load_sample_cases() if c.name.startswith("lung2"))
    out = {}
    for max_batch in (1, 8):
        server = Server(args.model_dir, root / f"cache-b{max_batch}", root / f"batch{max_batch}.log",
                        ["--max-batch", str(max_batch)])
        try:
            def client(c: int, url: str = server.url, mb: int = max_batch) -> int:
                with SegmentClient(url) as api:
                    for i in range(args.encodes):
                        api.encode(variant(case.image, 7_000_000 + 10_000 * mb + 1000 * c + i))
                return args.encodes

            with SegmentClient(server.url) as api:  # untimed first run
                api.encode(variant(case.image, 6_999_999))
            before = server.counters()
            start = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                done = sum(pool.map(client, range(args.clients)))
            seconds = time.perf_counter() - start
            after = server.counters()
            counters = {name: after[name] - before.get(name, 0) for name in after}
        finally:
            server.stop()
        out[f"max_batch_{max_batch}"] = {
            "images": done, "seconds": seconds, "images_per_s": done / seconds,
            "mean_batch": counters.get("nv_inference_count:encode", 0)
            / max(counters.get("nv_inference_exec_count:encode", 0), 1)}
    out["speedup_8_over_1"] = out["max_batch_8"]["images_per_s"] / out["max_batch_1"]["images_per_s"]
    return out


def kill_mid_load(args, root: Path, lists, reference) -> dict:
    server = Server(args.model_dir, root / "cache-kill", root / "kill.log", [])
    killed_at: list[float] = []
    answered = [0]
    total = sum(len(x) for x in lists)

    def killer() -> None:
        start = time.monotonic()
        while answered[0] < args.kill_fraction * total and time.monotonic() - start < args.max_seconds:
            time.sleep(0.05)
        killed_at.append(time.monotonic())
        server.kill()

    thread = threading.Thread(target=killer)
    thread.start()
    served = run_served(server.url, lists, time.monotonic() + args.max_seconds, answered)
    thread.join()
    accuracy = compare(served, reference)
    after = [r for r in served["records"].values() if r.get("t", 0) > killed_at[0] + 0.5 and r.get("error") is None]
    keys = list(served["keys"].items())
    restarted = Server(args.model_dir, root / "cache-kill", root / "kill-restart.log", [])
    answered, agree = 0, []
    try:
        with SegmentClient(restarted.url) as api:
            for (c, k), key in keys:
                i = next(i for i, r in enumerate(lists[c]) if r["k"] == k and r["op"] == "decode")
                request, index = lists[c][i], (c, i)
                mask = api.decode(key, **request["prompt"]).mask
                answered += 1
                agree.append(dice(mask, reference[index]))
        encoder_runs_after_restart = restarted.counters().get("nv_inference_exec_count:encode", 0)
    finally:
        restarted.stop()
    return {"killed_after_answers": args.kill_fraction, "accuracy": accuracy,
            "answered_more_than_0.5s_after_kill": len(after),
            "outcomes": {"answered": sum(r.get("error") is None for r in served["records"].values()),
                         "errors": accuracy["errors"]},
            "restart": {"startup_s": restarted.startup_s, "keys_from_before_kill": len(keys),
                        "decoded_after_restart": answered, "min_dice": min(agree) if agree else None,
                        "encode_executions_after_restart": encoder_runs_after_restart}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=100, help="per client")
    parser.add_argument("--encodes", type=int, default=12, help="per client, batching phase")
    parser.add_argument("--threads", type=int, default=None, help="in-process ONNX Runtime threads")
    parser.add_argument("--max-seconds", type=float, default=600, help="bound of each load phase")
    parser.add_argument("--kill-fraction", type=float, default=0.4, help="kill once this share is answered")
    parser.add_argument("--phases", default="mixed,batching,kill")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    phases = args.phases.split(",")
    lists = workload(args.clients, args.requests, seed=int(time.time()) % 1000 * 1000)
    print(f"in process: {args.clients} threads x {args.requests} requests ...", flush=True)
    in_process, reference = run_in_process(args.model_dir, lists, args.threads)
    report: dict = {"clients": args.clients, "requests_per_client": args.requests, "cores": os.cpu_count(),
                    "loadavg_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        root = Path(tmp)
        steps = (("mixed", "mixed load", lambda: mixed_load(args, root, lists, reference, in_process)),
                 ("batching", "encode throughput, max batch 1 vs 8", lambda: batching_effect(args, root)),
                 ("kill", "SIGKILL in mid-load, then restart", lambda: kill_mid_load(args, root, lists, reference)))
        for name, title, run in steps:
            if name in phases:
                print(f"served: {title} ...", flush=True)
                report[name] = run()
                if args.json is not None:  # each phase's figures are kept even if a later phase fails
                    args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")
    report["loadavg_at_end"] = os.getloadavg()
    text = json.dumps(report, indent=2, default=float)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
