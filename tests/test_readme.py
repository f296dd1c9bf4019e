"""The README's set-up commands are the ones CI runs, and every command block a user is told to run (README.md and
docs/from-a-scan-to-a-mask.md) runs as written (issue 27), with the extraction of ``scripts/first_hour.py``."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_has_exactly_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("gmiseg-edge demo")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci_lines = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == _readme_commands()[1]


# ------------------------------------------------------------------ issue 27: every block a user is told to run

def _first_hour():
    """``scripts/first_hour.py`` as a module: the one extraction of command blocks, shared with the script."""
    spec = importlib.util.spec_from_file_location("first_hour", REPO / "scripts" / "first_hour.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("first_hour", module)
    spec.loader.exec_module(module)
    return sys.modules["first_hour"]


first_hour = _first_hour()
DOC = "docs/from-a-scan-to-a-mask.md"


def test_every_command_block_is_run_or_says_why_not():
    blocks = first_hour.command_blocks()
    assert {b.page for b in blocks} == set(first_hour.PAGES)
    assert all(b.kind in ("run", "set-up", "not run in tests", "heavy") for b in blocks)
    assert all(b.reason for b in blocks if b.kind != "run"), "a block not run must say why"
    assert [b.kind for b in blocks if b.page == "README.md"][:2] == ["set-up", "not run in tests"]  # demo, pytest
    doc = [b for b in blocks if b.page == DOC]
    assert doc[0].text == "gmiseg-edge samples --copy samples" and len(doc) >= 7
    assert sum(b.kind == "run" for b in doc) >= 5
    assert f"]({DOC})" in (REPO / "README.md").read_text(), "the README links the page"


def test_a_marker_applies_to_the_next_block_only(tmp_path):
    (tmp_path / "page.md").write_text("<!-- heavy: slow -->\n\n```bash\necho a\n```\ntext\n```bash\necho b\n```\n"
                                      "<!-- not run in tests: a server -->\n```bash\nserve\n```\n```python\nx\n```\n")
    blocks = first_hour.command_blocks(tmp_path, ("page.md",))
    assert [(b.text, b.kind, b.reason, b.line) for b in blocks] == [
        ("echo a", "heavy", "slow", 3), ("echo b", "run", "", 7), ("serve", "not run in tests", "a server", 11)]


def _written_paths(page: str) -> list[str]:
    """Paths under ``out/`` that the page's outputs say were written (lines starting with ``out/``)."""
    text = (REPO / page).read_text()
    outputs = re.findall(r"^```\n(.*?)^```$", text, re.S | re.M)
    return [m for block in outputs for m in re.findall(r"^(out/\S+)", block, re.M)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, exported_models):
    """A user's folder after the main job (its model folder: the tests' shared export, linked) in which every block
    of kind ``run`` was run in page order: ``(folder, environment, outcomes)``."""
    folder = tmp_path_factory.mktemp("first-hour")
    first_hour.link_model(folder, exported_models("lite_medsam").folder)
    home = folder.parent / f"{folder.name}-home"
    home.mkdir()
    env = first_hour.block_environment(Path(sys.executable).parent, home, REPO)
    outcomes = [first_hour.run_block(b, folder, env, timeout=600) for b in first_hour.command_blocks()
                if b.kind == "run"]
    return folder, env, outcomes


def test_every_block_a_user_is_told_to_run_runs_as_written(workspace):
    folder, _, outcomes = workspace
    failed = [f"{o.block.name} exit {o.code}:\n{o.block.text}\n{o.tail}" for o in outcomes if o.code != 0]
    assert not failed, "\n\n".join(failed)
    print(first_hour.table(outcomes))
    heavy = {p for b in first_hour.command_blocks() if b.kind == "heavy" for p in re.findall(r"--out (\S+)", b.text)}
    promised = [p for p in _written_paths(DOC) if not any(p.startswith(h + "/") for h in heavy)]
    assert promised and all((folder / p).exists() for p in promised), [p for p in promised if not (folder / p).exists()]


@pytest.mark.extended
def test_the_heavy_blocks_run_as_written(workspace):
    folder, env, _ = workspace
    outcomes = [first_hour.run_block(b, folder, env, timeout=900) for b in first_hour.command_blocks()
                if b.kind == "heavy"]
    assert outcomes
    failed = [f"{o.block.name} exit {o.code}:\n{o.tail}" for o in outcomes if o.code != 0]
    assert not failed, "\n\n".join(failed)
    heavy = [p for b in first_hour.command_blocks() if b.kind == "heavy" for p in re.findall(r"--out (\S+)", b.text)]
    assert all((folder / p).exists() for p in _written_paths(DOC) if any(p.startswith(h + "/") for h in heavy))
