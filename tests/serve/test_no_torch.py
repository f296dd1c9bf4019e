"""The serving side is torch-free: its modules and commands import in a process where importing torch fails."""

from __future__ import annotations

from tests.no_torch import run_without_torch


def test_serve_modules_import_without_torch():
    proc = run_without_torch("""
        import sys
        import gmiseg_edge.cli, gmiseg_edge.cli.serve
        import gmiseg_edge.serve.app, gmiseg_edge.serve.handlers, gmiseg_edge.serve.client, gmiseg_edge.serve.bench
        import gmiseg_edge.serve.repository, gmiseg_edge.serve.pipeline, gmiseg_edge.serve.triton_model
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "segment_anything")))
    """)
    assert proc.stdout.strip() == "[]"
