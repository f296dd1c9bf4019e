"""What TensorRT engines are tied to: the GPU and the TensorRT version here (probed without importing torch).

An engine only runs on the GPU model and TensorRT version it was built with; :func:`tensorrt_status` says
whether TensorRT and a CUDA GPU are present and why not, :func:`engine_matches` whether a recorded engine fits.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

ENCODER_MAX_BATCH = 4
DECODER_MAX_POINTS = 16
DECODER_MAX_OBJECTS = 64  # the decoder's prompt batch K: profile min 1, opt DECODER_OPT_OBJECTS, max this
DECODER_OPT_OBJECTS = 16


@dataclass(frozen=True)
class CudaDevice:
    """The GPU an engine is built for (the fields recorded in the manifest)."""

    name: str
    compute_capability: str  # "8.7" (Orin), "8.9" (Ada), "9.0" (Hopper), ...


@dataclass(frozen=True)
class TensorRTStatus:
    available: bool
    reason: str
    version: str | None = None
    device: CudaDevice | None = None


def cuda_device(index: int = 0) -> CudaDevice | None:
    """Name and compute capability of CUDA device ``index`` through the driver API (None without a GPU)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value <= index:
        return None
    device = ctypes.c_int(0)
    lib.cuDeviceGet(ctypes.byref(device), index)
    name = ctypes.create_string_buffer(256)
    lib.cuDeviceGetName(name, 256, device)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    lib.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # COMPUTE_CAPABILITY_MAJOR
    lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # COMPUTE_CAPABILITY_MINOR
    return CudaDevice(name=name.value.decode(errors="replace"), compute_capability=f"{major.value}.{minor.value}")


def tensorrt_status() -> TensorRTStatus:
    """Whether engines can be built and run here: ``tensorrt`` and ``polygraphy`` importable, and a CUDA GPU."""
    try:
        import polygraphy  # noqa: F401
        import tensorrt as trt
    except ImportError as exc:
        return TensorRTStatus(False, f"TensorRT is not importable here ({exc}); install the [trt] extra on the target")
    device = cuda_device()
    if device is None:
        return TensorRTStatus(False, "no CUDA GPU is visible (libcuda.so.1 missing or no device)", trt.__version__)
    return TensorRTStatus(True, "ok", trt.__version__, device)


def engine_matches(entry: dict[str, Any], status: TensorRTStatus) -> bool:
    """Whether a manifest engine entry was built for this TensorRT version and GPU."""
    return (
        status.available
        and status.device is not None
        and entry.get("tensorrt") == status.version
        and entry.get("compute_capability") == status.device.compute_capability
        and entry.get("gpu") == status.device.name
    )
