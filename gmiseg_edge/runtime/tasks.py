"""Task decoders (DESIGN §11): one model folder, one encoder, any number of tasks, each its own decoder graph.

A task is a decoder-side adapter merged into a copy of the mask decoder and exported as
``decoders/<task>.onnx``. Every task shares the folder's encoder, its engines and the embedding cache, so a
second task on an encoded image costs only its decoder run. :class:`TaskDecoders` opens each task's graph on
first use (verified against the manifest's sha256). Task decoders are ONNX graphs whatever runs the encoder, so
they open in the ONNX Runtime backend's runner, on the providers the encoder's backend names
(:meth:`Backend.task_providers <gmiseg_edge.runtime.backends.base.Backend.task_providers>`).
"""

from __future__ import annotations

import threading

from gmiseg_edge.core.manifest import Manifest
from gmiseg_edge.runtime.backends.base import Backend, TaskDecoder


class TaskDecoders:
    """The task decoders of one model folder, opened lazily and kept open; thread-safe."""

    def __init__(self, manifest: Manifest, backend: Backend, threads: int | None = None) -> None:
        self.manifest = manifest
        self.backend = backend
        self.threads = threads
        self._open: dict[str, TaskDecoder] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """The tasks the folder holds, sorted."""
        return sorted(self.manifest.tasks())

    def get(self, task: str) -> TaskDecoder:
        """The decoder of ``task`` (an unknown task or an altered file is a ManifestError naming it)."""
        with self._lock:
            decoder = self._open.get(task)
            if decoder is None:
                path, _ = self.manifest.verify_task_file(task, "decoder")
                # onnxruntime is imported on the first task asked for, not when a folder is loaded
                from gmiseg_edge.runtime.backends.onnxrt.runner import open_task_decoder

                decoder = open_task_decoder(task, path, self.backend.task_providers(), self.threads)
                self._open[task] = decoder
            return decoder

    def bytes(self, task: str) -> int:
        """Size on disk of ``task``'s decoder graph."""
        return int(self.manifest.task_entry(task)["files"]["decoder"]["bytes"])
