"""Run Python code in a fresh interpreter where importing torch (or torchvision) fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_BLOCKER = '''
import importlib.abc
import sys


class _BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "segment_anything"):
            raise ImportError(f"{name} is blocked in this torch-free test process")
        return None


sys.meta_path.insert(0, _BlockTorch())
for _mod in [m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")]:
    del sys.modules[_mod]
'''


def run_without_torch(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a subprocess whose ``import torch`` raises ImportError; raise if it fails."""
    script = _BLOCKER
    script += "\ntry:\n    import torch  # noqa: F401\nexcept ImportError:\n    pass\nelse:\n"
    script += "    raise SystemExit('torch blocker did not work')\n"
    script += textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"torch-free subprocess failed (exit {proc.returncode})\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc
