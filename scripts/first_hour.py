"""The first hour of a new user, run: follow the README from a fresh clone and a fresh home folder.

Every ```bash block of README.md and of the pages it sends the user to (docs/from-a-scan-to-a-mask.md) is a
command block. A block is run unless an HTML comment right before it says otherwise:

- ``<!-- set-up: why -->``: installs or the main job; run from the fresh clone, skipped with ``--cheap`` (which
  reuses this Python environment and links a model folder instead of running the main job),
- ``<!-- not run in tests: why -->``: never run here (a reference of command forms with placeholders, a server
  that runs until stopped, the test suite itself); the reason is printed,
- ``<!-- heavy: why -->``: run by this script, and by the tests only under the ``extended`` marker.

Blocks run in order, each in ``bash -euo pipefail``, all in one working folder (the clone), so a block sees what
the ones before it wrote. The table at the end gives each block's exit code and seconds; the script exits 1 when
any block failed.

    python scripts/first_hour.py                        # fresh clone, fresh HOME, installs, main job: 10+ minutes
    python scripts/first_hour.py --cheap                # this environment, a linked model folder
    python scripts/first_hour.py --cheap --only docs    # the doc's blocks only
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the pages whose command blocks a user is told to run, in the order a new user reads them
PAGES = ("README.md", "docs/from-a-scan-to-a-mask.md")
#: where the README's commands expect the model folder (the main job writes it)
MODEL_DIR = Path("runs") / "demo" / "lite_medsam"
MARKER = re.compile(r"<!--\s*(set-up|not run in tests|heavy)\s*:\s*(.+?)\s*-->")
FENCE = re.compile(r"^```bash\n(.*?)^```$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    """A ```bash block of a page: where it is, its text, and its marker (``run``, ``set-up``, ``not run in
    tests``, ``heavy``) with the marker's reason."""

    page: str
    line: int
    text: str
    kind: str = "run"
    reason: str = ""

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass
class Outcome:
    """How one block went: its exit code (None: not run) and seconds, and the tail of its output."""

    block: Block
    code: int | None
    seconds: float
    tail: str = ""
    note: str = field(default="")
    output: str = field(default="", repr=False)


def command_blocks(root: Path = REPO, pages: tuple[str, ...] = PAGES) -> list[Block]:
    """The ```bash blocks of ``pages`` (relative to ``root``), each with the marker of the comment right before it
    (only blank lines between)."""
    blocks = []
    for page in pages:
        text = (root / page).read_text()
        for match in FENCE.finditer(text):
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = MARKER.fullmatch(before.strip())
            line = text.count("\n", 0, match.start()) + 1
            kind, reason = (marker.group(1), marker.group(2)) if marker else ("run", "")
            blocks.append(Block(page, line, match.group(1).rstrip("\n"), kind, reason))
    return blocks


def block_environment(bin_dir: Path | None, home: Path | None, pythonpath: Path | None,
                      keep_weights: bool = True) -> dict[str, str]:
    """The environment a block runs in: ``bin_dir`` first on PATH (the venv whose ``gmiseg-edge`` a user has
    activated), a fresh ``HOME``, ``PYTHONPATH``. ``keep_weights``: the weight cache stays the user's
    (``GMISEG_EDGE_HOME``); else the fresh home's, so the weights are fetched as on a new machine."""
    env = dict(os.environ)
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    if home is not None:
        if keep_weights:
            env.setdefault("GMISEG_EDGE_HOME", str(Path.home() / ".cache" / "gmiseg-edge"))
        else:
            env.pop("GMISEG_EDGE_HOME", None)
        env["HOME"] = str(home)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    env.pop("VIRTUAL_ENV", None)
    env["COLUMNS"] = "120"
    return env


def run_block(block: Block, cwd: Path, env: dict[str, str], timeout: float | None = None) -> Outcome:
    """Run ``block`` with bash (``-euo pipefail``) in ``cwd``: its exit code, seconds and output's tail."""
    start = time.perf_counter()
    try:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=cwd, env=env, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        code, output = done.returncode, done.stdout
    except subprocess.TimeoutExpired as exc:
        code, output = 124, (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (
            exc.stdout or "")
    return Outcome(block, code, time.perf_counter() - start, "\n".join(output.rstrip().splitlines()[-15:]),
                   output=output)


def link_model(workdir: Path, model: Path) -> None:
    """``workdir/runs/demo/lite_medsam`` pointing at ``model`` (a model folder made elsewhere)."""
    target = workdir / MODEL_DIR
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        return
    target.symlink_to(model.resolve(), target_is_directory=True)


def export_model_folder(workdir: Path, env: dict[str, str]) -> Outcome:
    """``gmiseg-edge export --out runs/demo/lite_medsam`` (fp32): the model folder the main job would write, for
    ``--cheap`` runs without ``--model``."""
    block = Block("(cheap)", 0, f"gmiseg-edge export --out {MODEL_DIR}", "run", "the model folder")
    return run_block(block, workdir, env)


def table(outcomes: list[Outcome]) -> str:
    """The outcomes as a plain-text table: block, kind, exit code, seconds, the block's first line."""
    rows = [("block", "kind", "exit", "seconds", "command")]
    for o in outcomes:
        first = o.block.text.splitlines()[0] if o.block.text else ""
        first = first if len(first) <= 70 else first[:69] + "…"
        rows.append((o.block.name, o.block.kind, "-" if o.code is None else str(o.code),
                     "-" if o.code is None else f"{o.seconds:.1f}", o.note or first))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows)


def fresh_clone(repo: Path, into: Path) -> Path:
    """``git clone`` of ``repo`` (its committed HEAD) into ``into/gmiseg-edge``."""
    target = into / "gmiseg-edge"
    subprocess.run(["git", "clone", "-q", str(repo), str(target)], check=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="the repository to clone (default: this checkout)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (printed), with each block's output in logs/")
    parser.add_argument("--cheap", action="store_true",
                        help="skip the set-up blocks (installs, main job): this Python environment and a linked "
                             "or exported model folder instead")
    parser.add_argument("--model", type=Path, help="--cheap: a model folder to link as runs/demo/lite_medsam "
                                                   "(default: export one, about a minute)")
    parser.add_argument("--only", choices=("readme", "docs"), help="the blocks of one page only")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a block may run")
    args = parser.parse_args(argv)

    pages = {"readme": PAGES[:1], "docs": PAGES[1:]}.get(args.only, PAGES)
    temp = Path(tempfile.mkdtemp(prefix="first-hour-"))
    outcomes: list[Outcome] = []
    try:
        clone = fresh_clone(args.repo.resolve(), temp)
        home = temp / "home"
        home.mkdir()
        if args.cheap:  # this environment's gmiseg-edge, the clone's code
            env = block_environment(Path(sys.executable).parent, home, clone)
            if args.model is not None:
                link_model(clone, args.model)
            else:
                outcomes.append(export_model_folder(clone, env))
        else:  # the clone's own .venv, made by the set-up blocks; the blocks call .venv/bin/... or activate it
            env = block_environment(clone / ".venv" / "bin", home, None, keep_weights=False)
        for block in command_blocks(clone, pages):
            if block.kind == "not run in tests" or (args.cheap and block.kind == "set-up"):
                outcomes.append(Outcome(block, None, 0.0, note=f"not run: {block.reason}"))
                continue
            print(f"== {block.name} ({block.kind})", flush=True)
            outcome = run_block(block, clone, env, args.timeout)
            outcomes.append(outcome)
            if args.keep:  # each block's whole output beside the clone
                logs = temp / "logs"
                logs.mkdir(exist_ok=True)
                (logs / f"{block.page.replace('/', '_')}_{block.line}.log").write_text(outcome.output)
            if outcome.code != 0:
                print(outcome.tail, flush=True)
        print(table(outcomes))
        failed = [o for o in outcomes if o.code not in (0, None)]
        print(f"{len(outcomes) - len(failed)} of {len(outcomes)} blocks passed or were not run; {len(failed)} failed"
              f"; total {sum(o.seconds for o in outcomes):.0f} s")
        return 1 if failed else 0
    finally:
        if args.keep:
            print(f"kept {temp}")
        else:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
