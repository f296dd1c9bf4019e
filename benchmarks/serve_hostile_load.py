"""Hostile requests mixed into normal traffic against a real `gmiseg-edge serve` (PyTriton), loopback only, bounded
in request count and wall-clock time (issue 26). Run it in the serving environment:

    PYTHONPATH=. .venv-serve/bin/python benchmarks/serve_hostile_load.py --model-dir models/lite_medsam

1. Baseline: the sample images are encoded once; then ``--normal`` decode requests (a box on a cached embedding,
   a few boxes per image) from one client: p50/p99 latency and every mask. Server RSS (the serve process,
   tritonserver and its stubs: the whole process tree, from /proc) is read after it.
2. Burst: the same normal requests from ``--clients`` threads while another thread sends each hostile kind
   ``--repeats`` times (too many points, boxes, objects; images beyond the pixel and side limits; an empty image
   and zero points sent raw, past the client's own check; malformed, unknown and size-forged keys; wrong dtypes and
   shapes; prompts outside the image; NaN and infinite coordinates; ...). Every hostile request must be refused
   within ``--hostile-timeout`` seconds; each kind is counted with the first line of its error.
3. After: readiness (HTTP health and every model), the normal requests once more (masks equal to the baseline's:
   Dice >= 0.999, exact equality counted), p99 beside the baseline's, and RSS again after ``--settle`` seconds.

Exit status 1 when the server died or is not ready, a hostile request hung or was answered, a normal mask changed,
or the server's memory after the burst exceeds the one before by more than ``--rss-tolerance`` (10%). Memory is
judged as the sum of Pss over the tree: the Python backend's shared-memory regions are mapped by tritonserver and a
stub, so a sum of VmRSS counts them twice (both sums are printed, with RssAnon and the /dev/shm blocks counted
once). Latency is reported, never judged (this machine is shared).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from serve_load import free_ports  # benchmarks/serve_load.py, beside this script

from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.data.samples import load_sample_cases
from gmiseg_edge.metrics import dice
from gmiseg_edge.serve.client import SegmentClient, ServerError
from gmiseg_edge.serve.protocol import MODELS

REPO = Path(__file__).resolve().parents[1]
_REFUSAL = re.compile(r"ServeRequestError: (.*?)(?:\\n|\n|$)")


# ---------------------------------------------------------------------------------------------- server

class Server:
    """`gmiseg-edge serve` on loopback in a process group of its own (as tests/serve/conftest.py starts it)."""

    def __init__(self, model_dir: Path, cache_dir: Path, log: Path, extra: list[str], timeout_s: float) -> None:
        self.http, self.grpc, self.metrics = free_ports(3)
        self.log = log
        command = [sys.executable, "-m", "gmiseg_edge.cli", "serve", "--model-dir", str(model_dir), "--backend", "ort",
                   "--threads", "2", "--http-port", str(self.http), "--grpc-port", str(self.grpc),
                   "--metrics-port", str(self.metrics), "--cache-dir", str(cache_dir), *extra]
        with open(log, "ab") as handle:
            self.proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
        start = time.monotonic()
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() - start > timeout_s:
                self.stop()
                raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        self.startup_s = time.monotonic() - start

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=5) as response:
                return response.status
        except OSError as exc:
            return getattr(exc, "code", 0) or 0

    def ready(self) -> bool:
        """HTTP /v2/health/ready and every model's ready endpoint answer 200."""
        return all(self.get(p) == 200 for p in ["/v2/health/ready"] + [f"/v2/models/{m}/ready" for m in MODELS])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mib(self) -> dict[str, dict[str, float]]:
        """Memory (MiB) of every process of the server's tree (the serve process, tritonserver, its stubs):
        VmRSS and its parts RssAnon (private heap) and RssShmem (shared memory: PyTriton's and the Python backend's
        /dev/shm blocks, mapped by more than one process and so counted more than once in a sum of VmRSS), and Pss
        (shared pages divided among the processes that map them: the sum is the tree's memory, each page once)."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        out: dict[str, dict[str, float]] = {}
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            todo.extend(children.get(pid, []))
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            values = {k: int(m.group(1)) / 1024 for k in ("VmRSS", "RssAnon", "RssShmem")
                      if (m := re.search(rf"^{k}:\s*(\d+) kB", status, re.M))}
            with contextlib.suppress(OSError):  # Pss: each shared page divided among the processes mapping it
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                if (m := re.search(r"^Pss:\s*(\d+) kB", rollup, re.M)):
                    values["Pss"] = int(m.group(1)) / 1024
            if "VmRSS" in values:
                label = " ".join(Path(c.decode(errors="replace")).name for c in command[:3] if c)[:40]
                out[f"{label} [{pid}]"] = values
        return out

    def shm_mib(self) -> float:
        """MiB of the /dev/shm blocks this server made (PyTriton's, named by the serve process id, and the Python
        backend's triton_python_backend_shm_region_*), counted once."""
        total = 0
        for path in Path("/dev/shm").iterdir():
            if path.name.startswith((f"pytrtion{self.proc.pid}-", "triton_python_backend_shm")):
                try:
                    total += path.stat().st_blocks * 512
                except OSError:
                    continue
        return total / (1 << 20)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL of the whole group if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=40)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        return self.proc.returncode


# ---------------------------------------------------------------------------------------------- normal traffic

def normal_cases(per_image: int) -> list[dict]:
    """Sample slices with a structure, and ``per_image`` boxes each (the mask's box, shifted a few pixels)."""
    cases = [c for c in load_sample_cases() if c.mask.any()][:4]
    out = []
    for case in cases:
        box = box_from_mask(case.mask).astype(np.float32)
        height, width = case.image.shape[:2]
        for j in range(per_image):
            shifted = np.clip(box + np.float32(3 * j) * np.array([-1, -1, 1, 1], np.float32),
                              0, [width - 1, height - 1, width - 1, height - 1]).astype(np.float32)
            out.append({"name": f"{case.name}#{j}", "image": case.image, "box": shifted})
    return out


def run_normal(url: str, cases: list[dict], keys: dict[str, str], count: int, clients: int, deadline: float,
               offset: int = 0) -> dict:
    """``count`` decode requests (case ``i % len(cases)``) from ``clients`` threads; latencies and masks."""
    lock = threading.Lock()
    latencies: list[float] = []
    masks: dict[int, list[np.ndarray]] = {}
    errors: list[str] = []
    skipped = [0]

    def client(c: int) -> None:
        with SegmentClient(url, timeout_s=60) as api:
            for i in range(c + offset, count + offset, clients):
                if time.monotonic() > deadline:
                    with lock:
                        skipped[0] += 1
                    continue
                case = i % len(cases)
                t0 = time.perf_counter()
                try:
                    mask = api.decode(keys[cases[case]["image_id"]], box=cases[case]["box"]).mask
                except ServerError as exc:
                    with lock:
                        errors.append(f"{cases[case]['name']}: {exc}"[:200])
                    continue
                seconds = time.perf_counter() - t0
                with lock:
                    latencies.append(seconds)
                    masks.setdefault(case, []).append(mask)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return {"stats": latency_stats(latencies), "latencies": latencies, "masks": masks, "errors": errors,
            "skipped": skipped[0]}


def latency_stats(latencies: list[float]) -> dict[str, float]:
    """n, p50, p99 and max of ``latencies`` (seconds) in ms."""
    ms = np.asarray(latencies) * 1e3
    return ({"n": len(ms), "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
             "max": float(ms.max())} if len(ms) else {"n": 0})


# ---------------------------------------------------------------------------------------------- hostile traffic

def hostile_kinds(image: np.ndarray, key: str, limits: dict[str, int]) -> dict[str, tuple[str, dict]]:
    """Hostile request kinds: name -> (model, inputs as sent, any dtype and shape). ``image`` is a normal image
    already encoded (as ``key``)."""
    height, width = image.shape[:2]
    cache_key = key.rsplit("-", 1)[0]
    hwc = image[:, :, None] if image.ndim == 2 else image
    f32 = np.float32
    side = limits["max_side"]
    over = int(np.ceil(np.sqrt(limits["max_pixels"] + 1)))  # the smallest square above the pixel limit
    box = np.array([10, 10, 40, 40], f32)
    k = {"key": np.asarray([key.encode()], dtype=object)}
    many = limits["max_points"] * 300
    return {
        "too many points": ("decode", {**k, "points": np.full((many, 2), 20, f32), "labels": np.ones(many, f32)}),
        "too many labels": ("decode", {**k, "points": np.full((1, 2), 20, f32),
                                       "labels": np.ones(limits["max_points"] + 1, f32)}),
        "1000 boxes": ("decode", {**k, "box": np.tile(box, (1000, 1))}),
        "1000 objects (box batch, segment)": ("segment", {"image": hwc, "box": np.tile(box, (1000, 1))}),
        "too many mask_inputs": ("decode", {**k, "box": box, "mask_input": np.zeros((8, 256, 256), f32)}),
        f"image {over}x{over} (> max pixels)": ("encode", {"image": np.zeros((1, over, over, 1), np.uint8)}),
        f"image 1x{side + 1} (> max side)": ("encode", {"image": np.zeros((1, 1, side + 1, 1), np.uint8)}),
        f"segment {over}x{over} + box": ("segment", {"image": np.zeros((over, over, 1), np.uint8), "box": box}),
        "empty image (raw)": ("segment", {"image": np.zeros((0, 0, 1), np.uint8), "box": box}),
        "zero points (raw)": ("decode", {**k, "points": np.zeros((0, 2), f32), "labels": np.zeros(0, f32)}),
        "malformed key": ("decode", {"key": np.asarray([b"not-a-key"], dtype=object), "box": box}),
        "unknown key": ("decode", {"key": np.asarray([("ab" * 32 + f"-{height}x{width}").encode()], dtype=object),
                                   "box": box}),
        "forged size 20000x20000 on a real key": ("decode", {"key": np.asarray([f"{cache_key}-20000x20000".encode()],
                                                                               dtype=object), "box": box}),
        "two keys": ("decode", {"key": np.asarray([key.encode()] * 2, dtype=object), "box": box}),
        "1 MB key": ("decode", {"key": np.asarray([b"a" * (1 << 20)], dtype=object), "box": box}),
        "float32 image": ("encode", {"image": hwc[None].astype(f32)}),
        "2-channel image": ("encode", {"image": np.zeros((1, 64, 64, 2), np.uint8)}),
        "image without batch dim": ("encode", {"image": hwc}),
        "float64 box": ("decode", {**k, "box": box.astype(np.float64)}),
        "int32 points": ("decode", {**k, "points": np.array([[20, 20]], np.int32), "labels": np.ones(1, f32)}),
        "box of 3 values": ("decode", {**k, "box": box[:3]}),
        "points [N, 3]": ("decode", {**k, "points": np.ones((2, 3), f32), "labels": np.ones(2, f32)}),
        "labels mismatch": ("decode", {**k, "points": np.full((2, 2), 20, f32), "labels": np.ones(3, f32)}),
        "no prompt": ("decode", dict(k)),
        "point outside the image": ("decode", {**k, "points": np.array([[width + 500, 10]], f32),
                                               "labels": np.ones(1, f32)}),
        "box outside the image": ("decode", {**k, "box": np.array([width + 10, height + 10, width + 90, height + 90],
                                                                  f32)}),
        "NaN point": ("decode", {**k, "points": np.array([[np.nan, 20]], f32), "labels": np.ones(1, f32)}),
        "NaN box": ("decode", {**k, "box": np.array([np.nan, 10, 40, 40], f32)}),
        "infinite box": ("decode", {**k, "box": np.array([10, 10, np.inf, 40], f32)}),
        "NaN mask_input": ("decode", {**k, "box": box, "mask_input": np.full((256, 256), np.nan, f32)}),
        "unknown decoder": ("decode", {**k, "box": box, "decoder": np.asarray([b"../../etc/passwd"], dtype=object)}),
        "unknown model": ("segment_task", {"image": hwc, "box": box}),
    }


class RawClient:
    """A plain tritonclient gRPC client: sends any tensor as given (the empty ones too, which ``SegmentClient``
    refuses before sending)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        self.grpc, self.exception, self.dtype = grpcclient, InferenceServerException, np_to_triton_dtype
        self.client = grpcclient.InferenceServerClient(url)
        self.timeout_s = timeout_s

    def send(self, model: str, inputs: dict[str, np.ndarray]) -> tuple[str, str]:
        """(outcome, first line): outcome 'refused', 'ANSWERED' (no error) or 'HUNG' (no answer in time)."""
        request = []
        for name, value in inputs.items():
            tensor = self.grpc.InferInput(name, list(value.shape), self.dtype(value.dtype))
            tensor.set_data_from_numpy(value)
            request.append(tensor)
        try:
            self.client.infer(model, request, client_timeout=self.timeout_s)
        except self.exception as exc:
            status, message = str(exc.status() or ""), str(exc.message() or exc)
            if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message:
                return "HUNG", f"no answer in {self.timeout_s} s"
            refusal = _REFUSAL.search(message)
            lines = [x.strip() for x in message.replace("\\n", "\n").splitlines() if x.strip()]
            errors = [x for x in lines if re.match(r"^[\w.]*(Error|Exception)\b", x)]
            line = refusal.group(1) if refusal else (errors[-1] if errors else lines[0] if lines else status)
            return "refused", f"[{status}] {line}"[:160]
        return "ANSWERED", "answered instead of refused"

    def close(self) -> None:
        self.client.close()


def run_hostile(url: str, kinds: dict[str, tuple[str, dict]], repeats: int, timeout_s: float, deadline: float,
                spacing_s: float) -> dict[str, dict]:
    """Each kind ``repeats`` times, interleaved (kind by kind, round after round); outcomes counted by kind."""
    report = {name: {"sent": 0, "refused": 0, "hung": 0, "answered": 0, "lines": set(), "max_s": 0.0}
              for name in kinds}
    raw = RawClient(url, timeout_s)
    try:
        for _ in range(repeats):
            for name, (model, inputs) in kinds.items():
                if time.monotonic() > deadline:
                    return report
                t0 = time.perf_counter()
                outcome, line = raw.send(model, inputs)
                entry = report[name]
                entry["sent"] += 1
                entry["max_s"] = max(entry["max_s"], time.perf_counter() - t0)
                entry[{"refused": "refused", "HUNG": "hung", "ANSWERED": "answered"}[outcome]] += 1
                entry["lines"].add(line)
                time.sleep(spacing_s)
    finally:
        raw.close()
    return report


# ---------------------------------------------------------------------------------------------- report

def mask_check(baseline: dict[int, np.ndarray], run: dict) -> dict:
    """Every mask of ``run`` against the baseline mask of its case: Dice and exact equality."""
    dices, exact, changed = [], 0, []
    for case, masks in run["masks"].items():
        for mask in masks:
            d = dice(mask, baseline[case]) if (mask.any() or baseline[case].any()) else 1.0
            dices.append(d)
            exact += bool(np.array_equal(mask, baseline[case]))
            if d < 0.999:
                changed.append((case, d))
    return {"compared": len(dices), "exact": exact, "min_dice": min(dices) if dices else None, "changed": changed}


def fmt(stats: dict, key: str) -> str:
    return f"{stats[key]:.1f}" if key in stats else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--normal", type=int, default=48, help="normal decode requests of each phase")
    parser.add_argument("--per-image", type=int, default=3, help="boxes per sample image")
    parser.add_argument("--clients", type=int, default=3, help="threads of normal traffic during the burst")
    parser.add_argument("--repeats", type=int, default=3, help="times each hostile kind is sent")
    parser.add_argument("--bursts", type=int, default=2, help="bursts in a row (RSS read after each)")
    parser.add_argument("--only", default="", help="comma-separated words: only the hostile kinds naming one")
    parser.add_argument("--skip", default="", help="comma-separated words: leave out the hostile kinds naming one")
    parser.add_argument("--hostile-timeout", type=float, default=30.0, help="seconds before a refusal counts as hung")
    parser.add_argument("--max-requests", type=int, default=1000, help="bound on all requests sent")
    parser.add_argument("--max-seconds", type=float, default=150.0, help="wall-clock bound of the run")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before the RSS after the burst is read")
    parser.add_argument("--rss-tolerance", type=float, default=0.10)
    parser.add_argument("--max-points", type=int, default=None, help="serve --max-points (default: the server's)")
    parser.add_argument("--max-pixels", type=int, default=None)
    parser.add_argument("--max-side", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from gmiseg_edge.serve.protocol import DEFAULT_LIMITS

    limits = {"max_points": args.max_points or DEFAULT_LIMITS.max_points,
              "max_pixels": args.max_pixels or DEFAULT_LIMITS.max_pixels,
              "max_side": args.max_side or DEFAULT_LIMITS.max_side}
    extra = [f"--{k.replace('_', '-')}={v}" for k, v in limits.items()]
    start = time.monotonic()
    deadline = start + args.max_seconds
    cases = normal_cases(args.per_image)
    images: dict[int, np.ndarray] = {}
    for case in cases:
        case["image_id"] = id(case["image"])
        images[case["image_id"]] = case["image"]
    first = cases[0]["image"]
    kinds = hostile_kinds(first, "0" * 64 + "-1x1", limits)  # only to count the requests before sending any
    planned = len(images) + (2 + args.bursts) * args.normal + len(kinds) * args.repeats * args.bursts
    if planned > args.max_requests:
        raise SystemExit(f"{planned} requests planned, more than --max-requests {args.max_requests}")
    failures: list[str] = []
    report: dict = {"limits": limits, "cores": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
                    "planned_requests": planned}
    with tempfile.TemporaryDirectory(prefix="serve-hostile-") as tmp:
        root = Path(tmp)
        server = Server(args.model_dir, root / "cache", root / "server.log", extra, timeout_s=args.max_seconds)
        try:
            report["startup_s"] = server.startup_s
            keys = {}
            with SegmentClient(server.url) as api:
                for image_id, image in images.items():
                    keys[image_id] = api.encode(image)
                api.decode(keys[cases[0]["image_id"]], box=cases[0]["box"])  # untimed first decode
            kinds = {k: v for k, v in hostile_kinds(first, keys[cases[0]["image_id"]], limits).items()
                     if (not args.only or any(word in k for word in args.only.split(",")))
                     and not (args.skip and any(word in k for word in args.skip.split(",")))}

            base = run_normal(server.url, cases, keys, args.normal, 1, deadline)
            baseline = {case: masks[0] for case, masks in base["masks"].items()}
            base_check = mask_check(baseline, base)  # one client, the same request: must be stable already
            time.sleep(args.settle)
            snapshots = [("before", server.rss_mib(), server.shm_mib())]

            bursts, hostile, burst_s = [], {}, 0.0
            for b in range(args.bursts):
                burst_result: dict = {}

                def normal_burst(out: dict = burst_result, offset: int = b) -> None:
                    out["normal"] = run_normal(server.url, cases, keys, args.normal, args.clients, deadline,
                                               offset=offset)

                thread = threading.Thread(target=normal_burst)
                burst_start = time.monotonic()
                thread.start()
                round_ = run_hostile(server.url, kinds, args.repeats, args.hostile_timeout, deadline, spacing_s=0.05)
                thread.join()
                burst_s += time.monotonic() - burst_start
                bursts.append(burst_result["normal"])
                for name, entry in round_.items():
                    total_entry = hostile.setdefault(name, {"sent": 0, "refused": 0, "hung": 0, "answered": 0,
                                                            "lines": set(), "max_s": 0.0})
                    for field in ("sent", "refused", "hung", "answered"):
                        total_entry[field] += entry[field]
                    total_entry["lines"] |= entry["lines"]
                    total_entry["max_s"] = max(total_entry["max_s"], entry["max_s"])
                if not server.alive():
                    break
                time.sleep(args.settle)
                snapshots.append((f"after burst {b + 1}", server.rss_mib(), server.shm_mib()))
            burst = {"masks": {}, "errors": [], "skipped": 0, "latencies": []}
            for run in bursts:
                for case, masks in run["masks"].items():
                    burst["masks"].setdefault(case, []).extend(masks)
                burst["errors"] += run["errors"]
                burst["skipped"] += run["skipped"]
                burst["latencies"] += run["latencies"]
            burst["stats"] = latency_stats(burst["latencies"])

            alive_after = server.alive()
            ready_after = server.ready() if alive_after else False
            after = run_normal(server.url, cases, keys, args.normal, 1, deadline) if ready_after else None
            time.sleep(args.settle)
            if server.alive():
                snapshots.append(("after (final)", server.rss_mib(), server.shm_mib()))
        finally:
            report["sigterm_exit_code"] = server.stop()
            report["server_log_tail"] = server.log.read_text()[-1500:]

    # ------------------------------------------------------------------ judge and print
    def totals(rss: dict[str, dict[str, float]]) -> dict[str, float]:
        return {k: sum(v.get(k, 0.0) for v in rss.values()) for k in ("Pss", "VmRSS", "RssAnon", "RssShmem")}

    before, final = totals(snapshots[0][1]), totals(snapshots[-1][1])
    ratio = final["Pss"] / before["Pss"]
    vmrss_ratio = final["VmRSS"] / before["VmRSS"]
    anon_ratio = final["RssAnon"] / before["RssAnon"]
    checks = {"burst": mask_check(baseline, burst), "after": mask_check(baseline, after) if after else None}
    hung = {k: v for k, v in hostile.items() if v["hung"]}
    answered = {k: v for k, v in hostile.items() if v["answered"]}
    unsent = [k for k, v in hostile.items() if v["sent"] < args.repeats * args.bursts]
    if not alive_after or not ready_after:
        failures.append(f"server alive={alive_after} ready={ready_after} after the burst")
    if hung:
        failures.append(f"hostile requests hung: {sorted(hung)}")
    if answered:
        failures.append(f"hostile requests answered instead of refused: {sorted(answered)}")
    if unsent:
        failures.append(f"hostile kinds not sent {args.repeats * args.bursts} times (time bound): {unsent}")
    for phase, check in (("baseline", base_check), *checks.items()):
        if check is None or check["changed"]:
            failures.append(f"normal masks changed ({phase}): {check and check['changed']}")
    for phase, run in (("baseline", base), ("burst", burst), ("after", after)):
        if run is not None and (run["errors"] or run["skipped"]):
            failures.append(f"normal requests failed ({phase}): {len(run['errors'])} errors, {run['skipped']} not "
                            f"sent (time bound); first: {run['errors'][:1]}")
    if len(snapshots) < 2 + args.bursts:
        failures.append("RSS after the burst not read (server gone)")
    elif not ratio <= 1 + args.rss_tolerance:
        failures.append(f"server memory after/before {ratio:.3f} > {1 + args.rss_tolerance:.2f} (sum of Pss; "
                        f"sum of VmRSS {vmrss_ratio:.3f}, RssAnon alone {anon_ratio:.3f})")

    elapsed = time.monotonic() - start
    print(f"\nServing under hostile load (issue 26): lite_medsam, ORT, serve --threads 2, loopback; {os.cpu_count()} "
          f"cores, load average at start {report['loadavg_at_start'][0]:.2f}; wall {elapsed:.0f} s "
          f"(bound {args.max_seconds:.0f} s), {planned} requests planned (bound {args.max_requests})")
    print(f"limits in force: max_points={limits['max_points']}, max_pixels={limits['max_pixels']}, "
          f"max_side={limits['max_side']}; one box, one object, mask_input [256, 256] (protocol shapes)")
    print(f"\nhostile kinds ({args.repeats} each x {args.bursts} burst(s), interleaved with {args.clients} normal "
          f"clients; hung = no answer in {args.hostile_timeout:.0f} s):")
    print(f"  {'kind':38s} {'sent':>4s} {'refused':>7s} {'hung':>4s} {'answered':>8s} {'max s':>6s}  "
          "error (status, first line)")
    for name, entry in hostile.items():
        lines = " | ".join(sorted(entry["lines"]))
        print(f"  {name:38s} {entry['sent']:4d} {entry['refused']:7d} {entry['hung']:4d} {entry['answered']:8d} "
              f"{entry['max_s']:6.2f}  {lines}")
    print("\nnormal decode requests (a box on a cached embedding), latency ms:")
    print(f"  {'phase':30s} {'n':>4s} {'p50':>7s} {'p99':>7s} {'max':>7s}  masks (vs baseline)")
    rows = (("baseline (1 client)", base, base_check),
            (f"burst ({args.clients} clients + hostile)", burst, checks["burst"]),
            ("after (1 client)", after, checks["after"]))
    for label, run, check in rows:
        if run is None:
            print(f"  {label:30s} not run (server not ready)")
            continue
        s = run["stats"]
        print(f"  {label:30s} {s['n']:4d} {fmt(s, 'p50'):>7s} {fmt(s, 'p99'):>7s} {fmt(s, 'max'):>7s}  "
              f"{check['exact']}/{check['compared']} exact, min Dice {check['min_dice']:.4f}, errors "
              f"{len(run['errors'])}")
    if after is not None and "p99" in after["stats"]:
        print(f"  p99 after / baseline: {after['stats']['p99'] / base['stats']['p99']:.2f}x; burst / baseline: "
              f"{burst['stats']['p99'] / base['stats']['p99']:.2f}x (reported, not judged: shared machine)")
    print(f"\nserver memory, MiB (whole process tree, {args.settle:.0f} s after each phase): VmRSS "
          "(RssAnon + RssShmem + file); judged: the sum of Pss (a page shared by n processes counts 1/n in each)")
    names = sorted({n for _, rss, _ in snapshots for n in rss})
    print(f"  {'process':42s} " + " ".join(f"{label:>16s}" for label, _, _ in snapshots))
    for name in names:
        cells = []
        for _, rss, _ in snapshots:
            v = rss.get(name)
            cells.append(f"{v['VmRSS']:7.1f} ({v.get('RssAnon', 0):6.1f})" if v else f"{'-':>16s}")
        print(f"  {name:42s} " + " ".join(cells))
    for field in ("Pss", "VmRSS", "RssAnon", "RssShmem"):
        print(f"  {'total ' + field:42s} " + " ".join(f"{totals(rss)[field]:16.1f}" for _, rss, _ in snapshots))
    print(f"  {'/dev/shm blocks of this server':42s} " + " ".join(f"{shm:16.1f}" for _, _, shm in snapshots))
    print(f"  ratio final/before: Pss {ratio:.3f} (bound {1 + args.rss_tolerance:.2f}), VmRSS {vmrss_ratio:.3f}, "
          f"RssAnon {anon_ratio:.3f}")
    print(f"\nreadiness after the burst: alive={alive_after}, ready={ready_after} (HTTP health + models); bursts "
          f"{burst_s:.1f} s; SIGTERM exit code {report['sigterm_exit_code']}")
    print("RESULT: " + ("PASS" if not failures else "FAIL\n  " + "\n  ".join(failures)))
    if args.json is not None:
        report.update({"hostile": {k: {**v, "lines": sorted(v["lines"])} for k, v in hostile.items()},
                       "normal": {label: None if run is None else {"stats": run["stats"], "masks": check}
                                  for label, run, check in rows},
                       "memory_mib": [{"when": label, "processes": rss, "totals": totals(rss), "dev_shm": shm}
                                      for label, rss, shm in snapshots],
                       "pss_ratio": ratio, "rss_ratio": vmrss_ratio, "anon_ratio": anon_ratio,
                       "alive": alive_after, "ready": ready_after, "failures": failures, "seconds": elapsed})
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
