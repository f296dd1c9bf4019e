"""``gmiseg-edge serve``: the runtime behind a real Triton Inference Server, started through PyTriton.

Triton does the serving (HTTP and gRPC endpoints, health and readiness, Prometheus metrics, dynamic batching of
``encode`` requests of one image shape across clients); this module binds :class:`ServingModels` to it. A bad
request gets an error naming the input at fault and the server keeps serving. SIGTERM and SIGINT stop it
gracefully: Triton stops taking requests, lets in-flight ones finish (``exit_timeout_s``) and unloads.

PyTriton (``nvidia-pytriton``) pins numpy<2, so it lives in an environment of its own (README "Serving"). Its
Python-backend stub links ``libpython3.x.so`` through the dynamic loader: the running interpreter's own library
folder is put first on ``LD_LIBRARY_PATH`` so a stub never loads another build of Python.
"""

from __future__ import annotations

import os
import signal
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gmiseg_edge.core.errors import BackendError, GmisegError
from gmiseg_edge.runtime import load
from gmiseg_edge.runtime.backends.trt.device import cuda_device
from gmiseg_edge.runtime.support.spacing import DEFAULT_SPACING
from gmiseg_edge.serve.handlers import ServedSupportSet, ServingModels, supports_used
from gmiseg_edge.serve.protocol import (
    BOX,
    DECODE,
    DECODER,
    DEFAULT_LIMITS,
    ENCODE,
    IMAGE,
    KEY,
    LABELS,
    LOW_RES_LOGITS,
    MASK,
    MASK_INPUT,
    POINTS,
    SCORE,
    SEGMENT,
    SEGMENT_SUPPORT,
    SPACING,
    SUPPORT,
    UNCERTAINTY,
    ServeLimits,
)
from gmiseg_edge.serve.stub_errors import STUB_FILE, stub_source

LOAD_ATTEMPTS = 3  # a model that fails to load (see HANDSHAKE_TIMEOUT_S) gets Triton started again
HANDSHAKE_TIMEOUT_S = 30.0  # PyTriton 0.7 gives a loaded model's stub 1 s to answer: a busy 2-core CPU misses it
SERVE_ENV_HINT = ('python3 -m venv .venv-serve && .venv-serve/bin/pip install -e ".[cpu,serve]" '
                  "(PyTriton pins numpy<2: keep it out of the main environment)")


class ServeRequestError(GmisegError):
    """A request the served model refused; the message starts with the model and names the input at fault.

    PyTriton hands its stub ``traceback.format_exception(None, error, error.__traceback__)`` of an inference
    callable's error: this class reads its ``__traceback__`` as None, so that text is one line
    (``...ServeRequestError: decode: input 'key': ...``), not the server's stack; the stub then answers the client
    with that line alone and status INVALID_ARGUMENT / HTTP 400 (:mod:`gmiseg_edge.serve.stub_errors`). Python
    itself keeps the real traceback (``sys.exc_info``: the server's log still shows it).
    """

    @property  # type: ignore[override]
    def __traceback__(self) -> None:
        return None

    @__traceback__.setter
    def __traceback__(self, _value: object) -> None:
        pass


@dataclass(frozen=True)
class ServeConfig:
    """Settings of ``gmiseg-edge serve``. ``address`` 127.0.0.1 serves this machine only; 0.0.0.0 the network."""

    model_dir: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    address: str = "127.0.0.1"
    backend: str = "auto"
    precision: str = "fp32"
    threads: int | None = None
    cache_dir: Path | None = None
    cache_max_gb: float | None = None
    max_batch: int = 8  # encode: largest batch Triton's dynamic batcher forms (1: no batching)
    queue_delay_us: int = 5000  # encode: how long a request may wait for others to batch with
    instances: int = 2  # decode and segment: requests run at once (each its own Triton model instance)
    exit_timeout_s: int = 10
    log_verbose: int = 0
    support_sets: tuple[tuple[str, Path], ...] = ()  # (name, support-set folder): served by segment_support
    limits: ServeLimits = DEFAULT_LIMITS  # what one request may carry (points, image pixels and side)

    def __post_init__(self) -> None:
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if len(set(ports)) != 3 or not all(0 < p < 65536 for p in ports):
            raise ValueError(f"need three different ports in 1..65535, got http {self.http_port}, "
                             f"grpc {self.grpc_port}, metrics {self.metrics_port}")
        if self.max_batch < 1 or self.instances < 1 or self.queue_delay_us < 0:
            raise ValueError(f"need max_batch >= 1, instances >= 1, queue_delay_us >= 0; got {self.max_batch}, "
                             f"{self.instances}, {self.queue_delay_us}")


def use_own_libpython() -> str:
    """Put the running interpreter's ``LIBDIR`` first on ``LD_LIBRARY_PATH`` (inherited by tritonserver and its
    Python-backend stubs); returns the folder."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    current = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *current]) if libdir else os.pathsep.join(current)
    return libdir


def _guarded(model: str, handler: Callable[[list[Any]], list[dict[str, np.ndarray]]]):
    """An inference callable whose library errors become one :class:`ServeRequestError` naming the model."""

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        try:
            return handler(requests)
        except GmisegError as exc:
            raise ServeRequestError(f"{model}: {exc}") from None

    return infer


def _encode_callable(models: ServingModels):
    def handle(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        images: list[np.ndarray] = []
        counts = []
        for request in requests:  # Triton put requests of one image shape together; each may hold several
            batch = request[IMAGE]
            counts.append(len(batch))
            images.extend(batch)
        keys = models.encode(images)
        out, start = [], 0
        for count in counts:
            out.append({KEY: np.asarray([[k.encode()] for k in keys[start:start + count]], dtype=object)})
            start += count
        return out

    return _guarded(ENCODE, handle)


def _single_callable(model: str, method: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]):
    def handle(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        return [method(dict(request.items())) for request in requests]

    return _guarded(model, handle)


def _tensors(triton_types: Any) -> dict[str, Sequence[Any]]:
    """The served models' inputs and outputs as PyTriton tensors (``protocol`` describes them)."""
    tensor = triton_types.Tensor
    prompt = [tensor(name=POINTS, dtype=np.float32, shape=(-1, 2), optional=True),
              tensor(name=LABELS, dtype=np.float32, shape=(-1,), optional=True),
              tensor(name=BOX, dtype=np.float32, shape=(4,), optional=True),
              tensor(name=MASK_INPUT, dtype=np.float32, shape=(256, 256), optional=True),
              tensor(name=DECODER, dtype=bytes, shape=(1,), optional=True)]
    image = tensor(name=IMAGE, dtype=np.uint8, shape=(-1, -1, -1))
    key = tensor(name=KEY, dtype=bytes, shape=(1,))
    answer = [tensor(name=MASK, dtype=np.uint8, shape=(-1, -1)), tensor(name=SCORE, dtype=np.float32, shape=(1,)),
              tensor(name=LOW_RES_LOGITS, dtype=np.float32, shape=(256, 256))]
    support = [tensor(name=MASK, dtype=np.uint8, shape=(-1, -1)), tensor(name=SCORE, dtype=np.float32, shape=(1,)),
               tensor(name=UNCERTAINTY, dtype=np.float32, shape=(-1, -1))]
    return {"encode_in": [image], "encode_out": [key], "decode_in": [key, *prompt], "decode_out": answer,
            "segment_in": [image, *prompt], "segment_out": [*answer, key],
            "support_in": [image, tensor(name=SUPPORT, dtype=bytes, shape=(1,)),
                           tensor(name=SPACING, dtype=np.float32, shape=(2,), optional=True)],
            "support_out": support}


def load_support_sets(predictor: Any, support_sets: Sequence[tuple[str, Path]],
                      log: Callable[[str], None], limits: ServeLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Each named support set (a dataset folder of example images and masks), encoded through the cache: at the
    headers' pixel sizes for requests with a pixel size (input 'spacing'), and at 1 mm per pixel for those without
    (a second segmenter, its embeddings read from the cache, only where some example has a pixel size of its own).
    The log says how large a query each takes (``limits.max_support_pixels``)."""
    from gmiseg_edge.jobs.segment import SupportSetPrompt, load_supports

    loaded = {}
    for name, folder in support_sets:
        if name in loaded:
            raise ValueError(f"support set {name!r} given twice")
        prompt = SupportSetPrompt(Path(folder))
        physical = load_supports(predictor, prompt)
        # examples with no pixel size in their files (PNG) are at 1 mm either way: one segmenter serves both
        same = all(s.spacing == DEFAULT_SPACING for s in physical.supports)
        loaded[name] = ServedSupportSet(pixels=physical if same else load_supports(predictor, prompt, physical=False),
                                        physical=physical)
        count = supports_used(loaded[name].pixels)
        largest = min(limits.max_support_pixels // max(count, 1), limits.max_pixels)
        sizes = sorted({s.spacing for s in loaded[name].physical.supports})
        log(f"support set {name}: {len(loaded[name].pixels.supports)} support(s) from {folder} (pixel sizes "
            f"{', '.join(f'{r:g}x{c:g}' for r, c in sizes)} mm, used when a request gives 'spacing'); queries of up to "
            f"{largest} pixels (serve --max-support-pixels {limits.max_support_pixels} / {count} supports)")
    return loaded


def _wait_longer_for_handshakes() -> None:
    """Give each model's stub :data:`HANDSHAKE_TIMEOUT_S` to hand this process its configuration.

    PyTriton (0.7) asks a stub that Triton has just loaded for its configuration over a Unix socket and gives it
    1 s; on a busy CPU the answer can come later (seen in CI after a restart: ``timed out``, then Triton started
    again, which costs 15-30 s a time). Only the timeout changes: the function PyTriton's ``Model.setup`` calls is
    wrapped in its module. If PyTriton renames it, nothing is wrapped and :data:`LOAD_ATTEMPTS` still retries.
    """
    from pytriton.models import model as triton_model

    handshake = getattr(triton_model, "get_config_from_handshake_server", None)
    if handshake is None or getattr(handshake, "patient", False):
        return

    def patient(socket_path: Any, timeout_s: float = HANDSHAKE_TIMEOUT_S) -> Any:
        return handshake(socket_path, timeout_s=max(timeout_s, HANDSHAKE_TIMEOUT_S))

    patient.patient = True  # type: ignore[attr-defined]
    triton_model.get_config_from_handshake_server = patient


#: allocations of at least this many bytes are mmapped by glibc in tritonserver and the stubs, and so given back to
#: the system when freed (an image of a request is one such buffer)
MMAP_THRESHOLD_BYTES = 1 << 20


#: gRPC request objects Triton keeps for reuse (its default: 8); each keeps the capacity of the largest inputs it
#: held (a 4097² image: 16 MiB), so a burst of large requests stays in tritonserver's memory, up to 8 times over
GRPC_REUSED_REQUESTS = 0


def give_large_buffers_back() -> None:
    """Have tritonserver and its stubs (children of this process: they inherit its environment) return every
    buffer of :data:`MMAP_THRESHOLD_BYTES` or more to the system when they free it.

    glibc's malloc otherwise raises its mmap threshold to the size of the largest buffer freed (up to 32 MiB), so
    after the first large request (a 4097² image is 16 MiB in gRPC's buffers) such buffers come from the heaps of
    tritonserver's many threads and stay in its RSS (measured: +50 MiB a burst of nine 4097² requests, not levelling
    off; ``benchmarks/serve_hostile_load.py``). A value the user set (``MALLOC_MMAP_THRESHOLD_``) is kept."""
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD_BYTES))


def _answer_errors_with_responses() -> bool:
    """Hand Triton PyTriton's stub with :func:`gmiseg_edge.serve.stub_errors.answer_errors` appended, so that a
    model's error is an error response (a refusal: one line, INVALID_ARGUMENT) and Triton's Python backend frees the
    request's shared memory (it keeps it when the stub raises: triton-inference-server/server#7481).

    PyTriton's ``Model.get_proxy_model_files`` gives the files Triton loads for each model (its default lifecycle:
    models loaded through the server's API); it is wrapped in its class. False when PyTriton's layout differs (no
    such method): errors then raise in the stub as before (500, and the leak)."""
    from pytriton.models.model import Model

    files = getattr(Model, "get_proxy_model_files", None)
    if files is None:
        return False
    if getattr(files, "answers_errors", False):
        return True

    def with_error_responses(self: Any) -> dict[str, bytes]:
        out = dict(files(self))
        for name, source in out.items():
            if name.endswith(f"/{STUB_FILE}"):
                out[name] = stub_source(source)
        return out

    with_error_responses.answers_errors = True  # type: ignore[attr-defined]
    Model.get_proxy_model_files = with_error_responses  # type: ignore[method-assign]
    return True


#: what Triton (the GPU build PyTriton ships) logs once at start where there is no CUDA GPU, whatever it is told
CUDA_START_ERROR = "CudaDriverHelper has not been initialized."


def skip_gpu_memory_pools(triton: Any) -> None:
    """On a machine without a CUDA GPU, start Triton with no pinned (page-locked) memory pool and no CUDA memory
    pool: it would otherwise try to allocate them through CUDA and log "Unable to allocate pinned system memory
    ... CUDA driver version is insufficient". The served models take and give host memory only (PyTriton's
    Python backend), so nothing is lost. PyTriton's ``TritonConfig`` has no field for these ``tritonserver``
    options (and rebuilds the config from its own fields), so they are set on the server arguments it prepared.
    Triton still logs :data:`CUDA_START_ERROR` once: its GPU build creates its CUDA block manager
    unconditionally, and no option skips that."""
    server_args = getattr(triton, "_triton_server_config", None)
    if server_args is None:  # another PyTriton layout: leave Triton's defaults
        return
    server_args["pinned_memory_pool_byte_size"] = 0
    server_args["cuda_memory_pool_byte_size"] = "0:0"


def run_server(config: ServeConfig, log: Callable[[str], None] = print) -> None:
    """Load the model folder, start Triton with ``encode``, ``decode`` and ``segment``, and serve until SIGTERM or
    SIGINT (then stop gracefully)."""
    libdir = use_own_libpython()
    give_large_buffers_back()
    try:  # pytriton: pins numpy<2, installed only in the serving environment
        from pytriton import model_config as triton_types
        from pytriton.triton import Triton, TritonConfig
    except ImportError as exc:
        raise BackendError(f"PyTriton is not installed in this environment ({exc}); create the serving "
                           f"environment: {SERVE_ENV_HINT}") from None
    _wait_longer_for_handshakes()
    if not _answer_errors_with_responses():
        log("warning: this PyTriton has no Model.get_proxy_model_files: a refused request is answered 500 (not 400) "
            "and Triton's Python backend keeps its inputs' shared memory")
    predictor = load(config.model_dir, backend=config.backend, precision=config.precision, threads=config.threads,
                     cache=config.cache_dir, cache_max_gb=config.cache_max_gb)
    models = ServingModels(predictor, limits=config.limits,
                           support_sets=load_support_sets(predictor, config.support_sets, log, config.limits))
    limits = config.limits
    log(f"limits a request: {limits.max_points} points, one box, {limits.max_pixels} image pixels, "
        f"{limits.max_side} a side, {limits.max_support_pixels} support-pixels (supports x query pixels)")
    decoders = models.task_decoders()
    if decoders:
        log(f"task decoders (input 'decoder' of decode and segment): {', '.join(decoders)}")
    tensors = _tensors(triton_types)
    triton_config = TritonConfig(
        http_address=config.address, grpc_address=config.address, metrics_address=config.address,
        http_port=config.http_port, grpc_port=config.grpc_port, metrics_port=config.metrics_port,
        allow_metrics=True, allow_cpu_metrics=True, allow_gpu_metrics=False,
        exit_timeout_secs=config.exit_timeout_s, log_verbose=config.log_verbose,
        grpc_infer_allocation_pool_size=GRPC_REUSED_REQUESTS,
    )
    batching = config.max_batch > 1
    encode_config = triton_types.ModelConfig(
        batching=True, max_batch_size=config.max_batch,
        batcher=triton_types.DynamicBatcher(max_queue_delay_microseconds=config.queue_delay_us if batching else 0))
    single = triton_types.ModelConfig(batching=False)

    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)  # Triton.serve stops gracefully on it

    def bind_all(triton: Any) -> None:
        triton.bind(ENCODE, _encode_callable(models), tensors["encode_in"], tensors["encode_out"],
                    config=encode_config, strict=True)
        triton.bind(DECODE, [_single_callable(DECODE, models.decode)] * config.instances, tensors["decode_in"],
                    tensors["decode_out"], config=single, strict=True)
        triton.bind(SEGMENT, [_single_callable(SEGMENT, models.segment)] * config.instances,
                    tensors["segment_in"], tensors["segment_out"], config=single, strict=True)
        if models.support_sets:
            support = _single_callable(SEGMENT_SUPPORT, models.segment_support)
            triton.bind(SEGMENT_SUPPORT, [support] * config.instances, tensors["support_in"], tensors["support_out"],
                        config=single, strict=True)

    gpu = cuda_device() is not None
    if not gpu:
        log(f"no CUDA GPU here: Triton starts without GPU memory pools; its one start-up line "
            f"\"{CUDA_START_ERROR}\" is harmless (the models run on the CPU)")
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        for attempt in range(1, LOAD_ATTEMPTS + 1):
            triton = Triton(config=triton_config)
            if not gpu:
                skip_gpu_memory_pools(triton)
            with triton:
                try:
                    bind_all(triton)
                except Exception as exc:  # tritonclient's InferenceServerException: a model failed to load
                    first = str(exc).strip().splitlines()[0][:300]
                    if attempt == LOAD_ATTEMPTS:
                        raise BackendError(f"Triton could not load the models ({LOAD_ATTEMPTS} attempts): {first}; "
                                           "see the server log above") from None
                    log(f"warning: Triton could not load a model ({first}); starting again "
                        f"({attempt + 1}/{LOAD_ATTEMPTS})")
                    continue
                log(f"serving {predictor.model_name} ({predictor.backend.name} {config.precision}) from "
                    f"{config.model_dir}: http://{config.address}:{config.http_port}, grpc {config.address}:"
                    f"{config.grpc_port}, metrics http://{config.address}:{config.metrics_port}/metrics; "
                    f"embedding cache {config.cache_dir or 'in memory only'}; libpython from {libdir}")
                triton.serve()
                break
    finally:
        signal.signal(signal.SIGTERM, previous)
        predictor.close()
    log("server stopped")
