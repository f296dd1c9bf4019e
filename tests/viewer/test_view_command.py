"""``gmiseg-edge view`` where napari cannot run: one line saying what to install or why (exit status 1), neither a
traceback nor Qt aborting the process. Each case runs the command in a child process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_BLOCK_NAPARI = '''
import importlib.abc
import sys


class _BlockNapari(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "napari":
            raise ImportError(f"No module named {name!r} (blocked in this test)")
        return None


sys.meta_path.insert(0, _BlockNapari())
'''
_VIEW = "from gmiseg_edge.cli import app\napp(['view'], prog_name='gmiseg-edge')\n"


def run_view(prelude: str, env: dict[str, str]) -> tuple[int, str]:
    """`gmiseg-edge view` (no image, no model) in a child process: its exit status and its output."""
    proc = subprocess.run([sys.executable, "-c", prelude + _VIEW], capture_output=True, text=True, timeout=300,
                          env=env)
    return proc.returncode, proc.stdout + proc.stderr


def test_view_without_the_napari_extra_says_how_to_install_it():
    status, output = run_view(_BLOCK_NAPARI, dict(os.environ))
    assert status == 1, output
    assert "pip install 'gmiseg-edge[napari]'" in output and "Traceback" not in output, output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="DISPLAY names the display on Linux only")
def test_view_without_a_display_says_so():
    pytest.importorskip("napari", reason="napari is not installed: pip install -e '.[napari]'")
    pytest.importorskip("qtpy.QtWidgets", reason="no Qt binding: pip install -e '.[napari]'")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    status, output = run_view("", env)
    assert status == 1, output
    assert "no display" in output and "xvfb-run" in output and "Traceback" not in output, output
