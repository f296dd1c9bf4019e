"""The widget's worker jobs: each job a napari worker thread running a Qt-free job (:mod:`gmiseg_edge.viewer.tasks`)
with the progress bar and, for propagation and support sets, the cancel button."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from napari.qt.threading import create_worker

from gmiseg_edge.viewer.tasks import Outcome, run_job
from gmiseg_edge.viewer.widget.state import WidgetState


class WorkersMixin(WidgetState):
    """Starting, following, cancelling and waiting for worker jobs."""

    progress_changed: Any  # SegmentWidget's Signal(int, int)

    def _start_job(self, name: str, job: Callable, done: Callable[[Outcome], None], cancellable: bool = True) -> None:
        cancel = threading.Event() if not cancellable else self._cancel
        if cancellable:
            self._cancel.clear()
            self._job_name = name
            self.cancel_button.setEnabled(True)
        if cancellable or self._job_name is None:
            # 0 of 1 until done or the first report, not Qt's animated busy bar (range 0, 0): each frame of its
            # animation repainted the window with the canvas and stalled the UI thread 50-150 ms again and again
            # while a slice encoded (benchmarks/viewer_latency.py, UI block)
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)
        worker = create_worker(run_job, job, cancel, self.progress_changed.emit, _start_thread=False)

        results: list[Outcome] = []

        def finished() -> None:
            # `finished` always comes; `returned` not when napari asked the worker to quit (its window closing)
            outcome = results[0] if results else Outcome(cancelled=True)
            if worker in self._jobs:
                self._jobs.remove(worker)
            if self._closed:
                if not self._jobs:
                    self._close_engine()
                return
            if cancellable:
                self._job_name = None
                self.cancel_button.setEnabled(False)
            if self._job_name is None and not any(self._jobs):
                self.progress_bar.setRange(0, 1)
                self.progress_bar.setValue(1 if outcome.error is None and not outcome.cancelled else 0)
            done(outcome)

        worker.returned.connect(results.append)
        worker.finished.connect(finished)
        self._jobs.append(worker)
        worker.start()

    def busy(self) -> bool:
        """Whether a worker job is running."""
        return bool(self._jobs)

    def cancel(self) -> None:
        """Stop the running propagation or support-set job at its next slice (the Labels layer is unchanged)."""
        self._cancel.set()

    def wait_for_jobs(self, timeout_s: float = 120.0) -> None:
        """Let the running jobs end (for a change of model or image, and on close)."""
        from qtpy.QtWidgets import QApplication

        deadline = time.monotonic() + timeout_s
        while self._jobs and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.005)

    def _can_start(self, what: str) -> bool:
        if self._job_name is not None:
            self.notify("warning", f"{self._job_name} is running: wait for it or cancel it before {what}")
            return False
        if self.image is None or self.labels_layer is None:
            self.notify("warning", f"no image: open one before {what}")
            return False
        return True
