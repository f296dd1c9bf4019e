"""What a benchmark ran on: CPU, cores, threads, GPU, library versions (no heavy import is triggered)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from typing import Any

LIBRARIES = ("gmiseg-edge", "numpy", "onnxruntime", "onnxruntime-gpu", "opencv-python-headless", "opencv-python",
             "scipy", "torch", "tensorrt", "onnx")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    """NVIDIA GPUs reported by ``nvidia-smi`` (empty when there is none or no driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that matter for speed (read from metadata: nothing is imported)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def environment(threads: int | None = None) -> dict[str, Any]:
    """A JSON-ready description of this machine and software."""
    providers: list[str] = []
    try:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
    except ImportError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_usable": affinity,
        "threads": threads,
        "gpus": gpu_names(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "onnxruntime_providers": providers,
        "libraries": library_versions(),
    }
