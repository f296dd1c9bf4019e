"""What ``segment`` reports: one :class:`FileResult` per input, and ``out/segment_report.json``
(:data:`REPORT_NAME`, written atomically) listing every input with its status and its output or error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gmiseg_edge.core.errors import GmisegError
from gmiseg_edge.core.files import write_json_atomic
from gmiseg_edge.jobs.segment.inputs import InputFile

REPORT_NAME = "segment_report.json"


@dataclass
class FileResult:
    """What was written for one input, or why it failed (``error``: one line naming the file; a failure before
    its mask is written leaves nothing for it: a volume's overlays are written after its mask)."""

    image: Path
    output: Path
    slices: int  # 2D: 1; volumes: slices segmented
    dice: float | None = None
    overlays: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""  # propagation: the slices visited and why it stopped; support set: the slices kept
    error: str = ""
    dice_on: str = ""  # what Dice was computed on: the image, the prompted slice k, the labelled slices, ...

    @property
    def ok(self) -> bool:
        return not self.error

    def to_dict(self) -> dict[str, object]:
        return {"image": str(self.image), "status": "ok" if self.ok else "failed",
                "output": str(self.output) if self.ok else None, "error": self.error or None,
                "slices": self.slices, "dice": self.dice, "dice_on": self.dice_on or None,
                "seconds": round(self.seconds, 3),
                "overlays": [str(p) for p in self.overlays], "note": self.note or None}


def failure_reason(item: InputFile, exc: BaseException) -> str:
    """One line naming the file: the library's message as it is, other errors with their type."""
    text = str(exc) if isinstance(exc, GmisegError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())  # one line (OpenCV's messages span several)
    return text if str(item.image) in text or (item.mask and str(item.mask) in text) else f"{item.image}: {text}"


def write_report(out: Path, results: Sequence[FileResult]) -> Path:
    """``out/segment_report.json``: every input with its status and its output or error (atomically)."""
    failed = sum(not r.ok for r in results)
    return write_json_atomic(out / REPORT_NAME, {"inputs": len(results), "written": len(results) - failed,
                                                 "failed": failed, "files": [r.to_dict() for r in results]})
