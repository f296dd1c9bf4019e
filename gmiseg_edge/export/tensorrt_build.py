"""Strongly typed TensorRT engines from the exported graphs (on the target: Jetson, RTX, data-centre GPUs).

Precision comes from the graph itself (fp16 graphs, int8 Q/DQ graphs), so engines are built strongly typed:
TensorRT 10 (JetPack 6) and 11 both accept that, and implicit INT8 calibration is gone in 11. Each engine
is recorded in the manifest with the TensorRT version, GPU name and compute capability it was built for;
an engine that does not match the device is rebuilt here and refused by the runtime, never loaded.

Everything here needs ``tensorrt`` (with ``polygraphy``) and a CUDA GPU: :func:`tensorrt_status` says
whether both are present and why not.
"""

from __future__ import annotations

import ctypes
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmiseg_edge.manifest import MANIFEST, Manifest, write_json_atomic
from gmiseg_edge.models.weights import sha256_of

ENCODER_MAX_BATCH = 4
DECODER_MAX_POINTS = 16
TIMING_CACHE = "tensorrt.timing.cache"
INT8_TRT_ENCODER = "encoder.int8-trt.onnx"


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


def how_to_build(model_dir: Path) -> str:
    """The plain instructions printed where engines cannot be built."""
    return (
        f"TensorRT engines are built on the target GPU: copy {model_dir} there, then run "
        f"`pip install 'gmiseg-edge[trt]'` and `gmiseg-edge build --model-dir {model_dir.name} --precision fp16` "
        "(or fp32 / int8). Until then the runtime uses ONNX Runtime."
    )


def engine_name(graph: str, precision: str) -> str:
    return f"{graph}.{precision}.engine"


def engine_matches(entry: dict[str, Any], status: TensorRTStatus) -> bool:
    """Whether a manifest engine entry was built for this TensorRT version and GPU."""
    return (
        status.available
        and status.device is not None
        and entry.get("tensorrt") == status.version
        and entry.get("compute_capability") == status.device.compute_capability
        and entry.get("gpu") == status.device.name
    )


def _profile(graph: str, input_size: int):
    from polygraphy.backend.trt import Profile

    if graph == "encoder":
        shape = (3, input_size, input_size)
        return Profile().add("image", min=(1, *shape), opt=(1, *shape), max=(ENCODER_MAX_BATCH, *shape))
    profile = Profile()
    profile.add("point_coords", min=(1, 1, 2), opt=(1, 3, 2), max=(1, DECODER_MAX_POINTS, 2))
    profile.add("point_labels", min=(1, 1), opt=(1, 3), max=(1, DECODER_MAX_POINTS))
    return profile


def build_engine(onnx_path: Path, engine_path: Path, graph: str, input_size: int, timing_cache: Path) -> None:
    """Build one strongly typed engine with an optimisation profile and a persisted timing cache."""
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath

    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
    config = CreateConfig(profiles=[_profile(graph, input_size)], load_timing_cache=str(timing_cache))
    engine = EngineBytesFromNetwork(network, config=config, save_timing_cache=str(timing_cache))()
    tmp = engine_path.with_name(f".{engine_path.name}.tmp")
    tmp.write_bytes(bytes(engine))
    tmp.replace(engine_path)


def build_engines(
    model_dir: Path, precision: str = "fp16", force: bool = False, log: Callable[[str], None] | None = None
) -> dict[str, dict[str, Any]]:
    """Build (or keep, when they match this GPU) the engines of one precision and record them in the manifest."""
    say = log or (lambda message: None)
    status = tensorrt_status()
    if not status.available:
        raise RuntimeError(f"cannot build TensorRT engines here: {status.reason}. {how_to_build(model_dir)}")
    assert status.device is not None
    manifest = Manifest.load(model_dir)
    manifest.verify_files()
    engines = manifest.data.setdefault("engines", {})
    built = {}
    for graph in ("encoder", "decoder"):
        source = manifest.graph_path(graph, precision)
        if precision == "int8" and graph == "encoder":
            source = model_dir / INT8_TRT_ENCODER  # symmetric Q/DQ, the form TensorRT takes
        name = engine_name(graph, precision)
        entry = engines.get(name)
        if entry and not force and engine_matches(entry, status) and (model_dir / name).is_file():
            say(f"{name}: up to date for {status.device.name} (TensorRT {status.version})")
            built[name] = entry
            continue
        if entry:
            say(f"{name}: built for {entry.get('gpu')} / TensorRT {entry.get('tensorrt')}; rebuilding")
        say(f"building {name} from {source.name} on {status.device.name} (this takes minutes) ...")
        build_engine(source, model_dir / name, graph, manifest.preprocess.input_size, model_dir / TIMING_CACHE)
        entry = {
            "graph": graph,
            "precision": precision,
            "source": source.name,
            "sha256": sha256_of(model_dir / name),
            "bytes": (model_dir / name).stat().st_size,
            "tensorrt": status.version,
            "gpu": status.device.name,
            "compute_capability": status.device.compute_capability,
            "strongly_typed": True,
            "profiles": {"encoder_batch": [1, ENCODER_MAX_BATCH], "decoder_points": [1, DECODER_MAX_POINTS]},
            "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        engines[name] = entry
        built[name] = entry
        write_json_atomic(model_dir / MANIFEST, manifest.data)
    return built
