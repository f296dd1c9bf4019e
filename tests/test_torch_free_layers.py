"""The torch-free layers (core, data, metrics, runtime, the runtime's jobs, the command) import with torch
blocked: the static import-linter contract, checked once more as Python really imports them."""

from __future__ import annotations

from tests.no_torch import run_without_torch


def test_torch_free_modules_import_without_torch():
    proc = run_without_torch("""
        import sys
        import gmiseg_edge.cli, gmiseg_edge.cli.render, gmiseg_edge.cli.parse, gmiseg_edge.cli.progress
        import gmiseg_edge.jobs.segment, gmiseg_edge.jobs.evaluate, gmiseg_edge.jobs.bench, gmiseg_edge.jobs.demo
        import gmiseg_edge.jobs.overlays, gmiseg_edge.jobs.bench.report, gmiseg_edge.jobs.bench.tasks
        import gmiseg_edge.cli.adapt, gmiseg_edge.runtime.tasks
        import gmiseg_edge.runtime.loader, gmiseg_edge.runtime.support.segmenter, gmiseg_edge.runtime.cache
        import gmiseg_edge.runtime.backends.onnxrt.runner, gmiseg_edge.runtime.backends.trt.runner
        import gmiseg_edge.runtime.backends.trt.build, gmiseg_edge.runtime.backends.trt.device
        import gmiseg_edge.core.manifest, gmiseg_edge.core.prediction, gmiseg_edge.runtime.backends.onnxrt.session
        import gmiseg_edge.data, gmiseg_edge.metrics, gmiseg_edge.models.zoo, gmiseg_edge.models.weights
        import gmiseg_edge.data.dicom, gmiseg_edge.data.dicom_seg, gmiseg_edge.data.challenge, gmiseg_edge.data.align
        import gmiseg_edge.jobs.challenge
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "segment_anything")))
    """)
    assert proc.stdout.strip() == "[]"
