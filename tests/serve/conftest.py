"""Fixtures of the serving tests: the serving environment (PyTriton pins numpy<2, so it is a venv of its own),
free loopback ports, and a `gmiseg-edge serve` process that the tests start and stop themselves."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPTS = Path(__file__).parent / "scripts"
SERVE_ENV_HINT = 'python3 -m venv .venv-serve && .venv-serve/bin/pip install -e ".[cpu,serve]"'


def serve_python() -> Path:
    """The serving environment's interpreter ($GMISEG_EDGE_SERVE_PYTHON, else .venv-serve/bin/python)."""
    return Path(os.environ.get("GMISEG_EDGE_SERVE_PYTHON", REPO / ".venv-serve" / "bin" / "python"))


@pytest.fixture(scope="module")
def model_dir(exported_models) -> Path:
    """The exported lite_medsam folder (the session's shared export; $GMISEG_EDGE_TEST_MODEL_DIR, when set, names
    a folder exported before, to rerun these tests without exporting again)."""
    given = os.environ.get("GMISEG_EDGE_TEST_MODEL_DIR")
    return Path(given) if given else exported_models("lite_medsam").folder


@pytest.fixture(scope="session")
def serve_env() -> Path:
    """The serving interpreter, or skip (with how to create it) where there is none."""
    python = serve_python()

    def missing(reason: str) -> None:
        if os.environ.get("GMISEG_EDGE_REQUIRE_SERVE") == "1":  # CI (.ci/run): the serving tests must run
            pytest.fail(reason)
        pytest.skip(reason)

    if not python.is_file():
        missing(f"no serving environment at {python} (PyTriton pins numpy<2, so it has its own): {SERVE_ENV_HINT}")
    probe = subprocess.run([str(python), "-c", "import pytriton, tritonclient.grpc"], capture_output=True, text=True,
                           timeout=60)
    if probe.returncode != 0:
        missing(f"{python} lacks pytriton/tritonclient ({probe.stderr.strip()[-200:]}): {SERVE_ENV_HINT}")
    return python


def run_script(python: Path, name: str, *args: str, timeout: float = 120) -> dict:
    """Run ``scripts/<name>`` in the serving environment (this checkout first on the path); its JSON output."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([str(python), str(SCRIPTS / name), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ServerProcess:
    """`gmiseg-edge serve` in a process group of its own (tritonserver and its stubs are its children)."""

    def __init__(self, python: Path, model_dir: Path, cache_dir: Path, log: Path, ports: list[int],
                 extra: tuple[str, ...] = ()) -> None:
        self.http, self.grpc, self.metrics = ports
        self.log = log
        command = [str(python), "-m", "gmiseg_edge.cli", "serve", "--model-dir", str(model_dir),
                   "--http-port", str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics),
                   "--cache-dir", str(cache_dir), "--threads", "2", "--backend", "ort", *extra]
        self.shm_before = {p.name for p in Path("/dev/shm").glob("psm_*")}
        with open(log, "ab") as handle:
            self.proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                                         env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def get(self, path: str, port: int | None = None) -> tuple[int, str]:
        """(status, body) of an HTTP GET on the server (status 0 when unreachable)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port or self.http}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except OSError as exc:
            return getattr(exc, "code", 0) or 0, str(exc)

    def wait_ready(self, timeout: float = 90) -> float:
        """Seconds until the server and its three models are ready (PyTriton loads the models after Triton's
        endpoints are up, when /v2/health/ready already answers 200); fails with the log on exit or timeout."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited ({self.proc.returncode}):\n{self.log.read_text()[-4000:]}")
            models = ("encode", "decode", "segment") + (("segment_support",) if "--support" in self.proc.args else ())
            paths = ["/v2/health/ready"] + [f"/v2/models/{m}/ready" for m in models]
            if all(self.get(path)[0] == 200 for path in paths):
                return time.monotonic() - start
            time.sleep(0.25)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log.read_text()[-4000:]}")

    def memory_mib(self) -> dict[str, float]:
        """MiB of the server's private memory (RssAnon summed over its process tree: the serve process,
        tritonserver, the stubs) and of its shared memory (PyTriton's and the Python backend's /dev/shm regions,
        named by the serve process id, counted once)."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # a process that ended meanwhile
                continue
            children.setdefault(parent, []).append(int(stat.parent.name))
        anon_kb, todo = 0, [self.proc.pid]
        while todo:
            pid = todo.pop()
            todo.extend(children.get(pid, []))
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                anon_kb += sum(int(line.split()[1]) for line in status.splitlines() if line.startswith("RssAnon:"))
        shm = 0
        for path in Path("/dev/shm").glob(f"pytrtion{self.proc.pid}-*"):
            with contextlib.suppress(OSError):
                shm += path.stat().st_blocks * 512
        return {"anon": anon_kb / 1024, "shm": shm / (1 << 20)}

    def remove_shared_memory(self) -> list[str]:
        """Delete the /dev/shm segments a SIGKILLed server leaves: PyTriton's, named by the serve process id, and
        Python's ``psm_*`` blocks made since this server started that no live process maps."""
        shm = Path("/dev/shm")
        if not shm.is_dir():
            return []
        mapped = set()
        for maps in Path("/proc").glob("[0-9]*/maps"):
            try:
                mapped.update(line.split()[-1] for line in maps.read_text().splitlines() if "/dev/shm/" in line)
            except OSError:  # a process that ended meanwhile, or not ours to read
                continue
        removed = []
        for path in shm.iterdir():
            ours = path.name.startswith(f"pytrtion{self.proc.pid}-") or (
                path.name.startswith("psm_") and path.name not in self.shm_before and str(path) not in mapped)
            if ours:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return removed

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL of the whole group if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        self.signal_group(signal.SIGKILL)
        self.proc.wait(timeout=10)
