"""Strongly typed TensorRT engines from the exported graphs (on the target: Jetson, RTX, data-centre GPUs).

Precision comes from the graph itself (fp16 graphs, int8 Q/DQ graphs), so engines are built strongly typed:
TensorRT 10 (JetPack 6) and 11 both accept that, and implicit INT8 calibration is gone in 11. Each engine
is recorded in the manifest with the TensorRT version, GPU name and compute capability it was built for;
an engine that does not match the device is rebuilt here and refused by the runtime, never loaded.

Everything here needs ``tensorrt`` (with ``polygraphy``) and a CUDA GPU: :func:`tensorrt_status` says
whether both are present and why not.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gmiseg_edge.core.errors import BuildError
from gmiseg_edge.core.files import atomic_path
from gmiseg_edge.core.graph_io import (
    ENCODER_INPUT,
    HAS_MASK_INPUT,
    LOW_RES,
    MASK_INPUT,
    POINT_COORDS,
    POINT_LABELS,
)
from gmiseg_edge.core.manifest import Manifest, engine_filename, file_entry
from gmiseg_edge.runtime.backends.trt.device import (
    DECODER_MAX_OBJECTS,
    DECODER_MAX_POINTS,
    DECODER_OPT_OBJECTS,
    ENCODER_MAX_BATCH,
    engine_matches,
    tensorrt_status,
)

TIMING_CACHE = "tensorrt.timing.cache"
INT8_TRT_ENCODER = "encoder.int8-trt.onnx"


def how_to_build(model_dir: Path) -> str:
    """The plain instructions printed where engines cannot be built."""
    return (
        f"TensorRT engines are built on the target GPU: copy {model_dir} there, then run "
        f"`pip install 'gmiseg-edge[trt]'` and `gmiseg-edge build --model-dir {model_dir.name} --precision fp16` "
        "(or fp32 / int8). Until then the runtime uses ONNX Runtime."
    )


def _profile(graph: str, input_size: int):
    from polygraphy.backend.trt import Profile

    if graph == "encoder":
        shape = (3, input_size, input_size)
        return Profile().add(ENCODER_INPUT, min=(1, *shape), opt=(1, *shape), max=(ENCODER_MAX_BATCH, *shape))
    return decoder_profile(Profile())


def decoder_shapes() -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape of each dynamic decoder input: K objects (1..DECODER_MAX_OBJECTS, tuned for
    DECODER_OPT_OBJECTS) of N points (1..DECODER_MAX_POINTS, tuned for 3) against one image embedding."""
    k_min, k_opt, k_max = 1, DECODER_OPT_OBJECTS, DECODER_MAX_OBJECTS
    n_min, n_opt, n_max = 1, 3, DECODER_MAX_POINTS
    return {
        POINT_COORDS: ((k_min, n_min, 2), (k_opt, n_opt, 2), (k_max, n_max, 2)),
        POINT_LABELS: ((k_min, n_min), (k_opt, n_opt), (k_max, n_max)),
        MASK_INPUT: tuple((k, 1, LOW_RES, LOW_RES) for k in (k_min, k_opt, k_max)),  # type: ignore[dict-item]
        HAS_MASK_INPUT: ((k_min,), (k_opt,), (k_max,)),
    }


def decoder_profile(profile):
    """Add :func:`decoder_shapes` to a polygraphy ``Profile`` (the image embedding is static, (1, 256, 64, 64))."""
    for name, (low, opt, high) in decoder_shapes().items():
        profile.add(name, min=low, opt=opt, max=high)
    return profile


def build_engine(onnx_path: Path, engine_path: Path, graph: str, input_size: int, timing_cache: Path) -> None:
    """Build one strongly typed engine with an optimisation profile and a persisted timing cache."""
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath

    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
    config = CreateConfig(profiles=[_profile(graph, input_size)], load_timing_cache=str(timing_cache))
    engine = EngineBytesFromNetwork(network, config=config, save_timing_cache=str(timing_cache))()
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(engine))


def build_engines(
    model_dir: Path, precision: str = "fp16", force: bool = False, log: Callable[[str], None] | None = None
) -> dict[str, dict[str, Any]]:
    """Build (or keep, when they match this GPU) the engines of one precision and record them in the manifest."""
    say = log or (lambda message: None)
    status = tensorrt_status()
    if not status.available:
        raise BuildError(f"cannot build engines here: {status.reason}. {how_to_build(model_dir)}")
    assert status.device is not None
    manifest = Manifest.load(model_dir)
    manifest.verify_files()
    engines = manifest.engines()
    built = {}
    for graph in ("encoder", "decoder"):
        source = manifest.graph_path(graph, precision)
        if precision == "int8" and graph == "encoder":
            source = model_dir / INT8_TRT_ENCODER  # symmetric Q/DQ, the form TensorRT takes
        name = engine_filename(graph, precision)
        entry = engines.get(name)
        if entry and not force and engine_matches(entry, status) and (model_dir / name).is_file():
            say(f"{name}: up to date for {status.device.name} (TensorRT {status.version})")
            built[name] = entry
            continue
        if entry:
            say(f"{name}: built for {entry.get('gpu')} / TensorRT {entry.get('tensorrt')}; rebuilding")
        say(f"building {name} from {source.name} on {status.device.name} (this takes minutes) ...")
        build_engine(source, model_dir / name, graph, manifest.preprocess.input_size, model_dir / TIMING_CACHE)
        entry = file_entry(
            model_dir / name,
            graph=graph,
            precision=precision,
            source=source.name,
            tensorrt=status.version,
            gpu=status.device.name,
            compute_capability=status.device.compute_capability,
            strongly_typed=True,
            profiles={"encoder_batch": [1, ENCODER_MAX_BATCH], "decoder_points": [1, DECODER_MAX_POINTS],
                      "decoder_objects": [1, DECODER_MAX_OBJECTS]},
            built=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        manifest.record_engine(name, entry)
        manifest.save()
        built[name] = entry
    return built
