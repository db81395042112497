"""Every code block of README.md and docs/*.md runs (issue 14), so the docs cannot rot.

One test per file runs its blocks in document order from a scratch folder (pytest's tmp_path)
holding a copy of the repository's models/; nothing is written into the repository.

- ```python: executed in one namespace per file, like a notebook. A comment `# -> TEXT` claims
  that the block prints the line TEXT (runs of whitespace count as one space): checked.
- ```bash, ```sh, ```console (lines starting with `$ `): every command line is a `spikescan`
  command, run in a subprocess (bash, so globs work) and expected to exit 0.
- ```snn: written next to the models (so imports of them resolve) and run through
  `spikescan check`, which must pass.
- ``` (no language) and ```text: text, diagrams, diagnostics; not executed.

A block that cannot run as written says so on the line just before its fence:

    <!-- doc-test: skip (REASON) -->   not run (installs packages, needs a download or data files)
    <!-- doc-test: tiny (REASON) -->   bash: each `spikescan train` runs on 64-sample subsets
                                       (--limit-train/--limit-eval 64) with --epochs N replaced by
                                       the rank of N among the block's --epochs values (20 and
                                       then --resume --epochs 30 become 1 and 2; 1 when absent),
                                       each `spikescan eval` with --limit 64; everything else as
                                       written
    <!-- doc-test: error (REASON) -->  snn: a deliberate error example; `spikescan check` must fail
                                       with a diagnostic

test_every_block_runs_or_is_marked checks all of this statically, so that a new block that
cannot run fails until it carries a marker with a reason.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))

SHELL_LANGS = {"bash", "sh", "console"}
TEXT_LANGS = {"", "text"}
RUN_LANGS = {"python", "snn"} | SHELL_LANGS
MARKERS = {  # marker kind -> languages it applies to
    "skip": RUN_LANGS,
    "tiny": SHELL_LANGS,
    "error": {"snn"},
}
TINY_LIMIT = "64"
COMMAND_TIMEOUT_S = 300

FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)[^`]*$")
MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<kind>[\w-]+)\s*(?:\((?P<reason>[^()]*)\))?\s*-->\s*$")
CLAIM = re.compile(r"#\s*->\s*(?P<text>.+?)\s*$")


@dataclass
class Block:
    path: str  # relative to the repository, e.g. "docs/tutorial.md"
    line: int  # 1-based line of the opening fence
    lang: str
    body: str
    marker: Optional[str] = None  # skip | tiny | error
    reason: Optional[str] = None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line} ({self.lang or 'text'} block)"


def parse_blocks(text: str, path: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a markdown text, and the problems found while parsing (unclosed
    fences, markers not directly above a fence, malformed markers)."""
    lines = text.split("\n")
    blocks, problems = [], []
    pending = None  # (line number, match) of a marker on the previous line
    i = 0
    while i < len(lines):
        line = lines[i]
        m = FENCE.match(line)
        if m:
            fence, lang = m.group(1), m.group(2).lower()
            j = i + 1
            while j < len(lines) and not (lines[j].startswith(fence) and lines[j].strip() == fence[0] * len(lines[j].strip())):
                j += 1
            if j == len(lines):
                problems.append(f"{path}:{i + 1}: code fence never closed")
            b = Block(path, i + 1, lang, "\n".join(lines[i + 1 : j]))
            if pending is not None:
                b.marker, b.reason = pending[1].group("kind"), (pending[1].group("reason") or "").strip()
            blocks.append(b)
            pending = None
            i = j + 1
            continue
        if pending is not None:
            problems.append(f"{path}:{pending[0]}: a doc-test marker must be on the line just before a code fence")
            pending = None
        if line.lstrip().startswith("<!--") and ("doc-test" in line or "no-run" in line):
            mm = MARKER.match(line)
            if mm is None:
                problems.append(f"{path}:{i + 1}: malformed marker {line.strip()!r}; write <!-- doc-test: skip (reason) -->")
            else:
                pending = (i + 1, mm)
        i += 1
    if pending is not None:
        problems.append(f"{path}:{pending[0]}: a doc-test marker must be on the line just before a code fence")
    return blocks, problems


def shell_commands(block: Block) -> list[tuple[int, str]]:
    """(line number in the file, command) of a shell block: bash/sh lines (backslash
    continuations joined, comment lines dropped), or a console block's `$ ` lines."""
    out, acc, start = [], "", 0
    for k, raw in enumerate(block.body.split("\n")):
        n = block.line + 1 + k
        if block.lang == "console":
            if raw.startswith("$ "):
                out.append((n, raw[2:].strip()))
            continue
        s = raw.strip()
        if not acc and (not s or s.startswith("#")):
            continue
        if not acc:
            start = n
        if s.endswith("\\"):
            acc += s[:-1].rstrip() + " "
            continue
        out.append((start, acc + s))
        acc = ""
    if acc:
        out.append((start, acc.strip()))
    return out


def is_spikescan_command(cmd: str) -> bool:
    return re.match(r"spikescan(\s|$)", cmd) is not None


def _epochs(tokens: list[str]) -> list[tuple[int, int]]:
    """(token index, N) of each --epochs N / --epochs=N."""
    out = []
    for k, tok in enumerate(tokens):
        if tok == "--epochs" and k + 1 < len(tokens):
            out.append((k + 1, int(tokens[k + 1])))
        elif tok.startswith("--epochs="):
            out.append((k, int(tok.split("=", 1)[1])))
    return out


def tiny_command(cmd: str, all_epochs: tuple[int, ...] = ()) -> str:
    """`spikescan train` on small subsets, each --epochs N replaced by the rank of N among
    `all_epochs` (the block's --epochs values; 1 when absent), so that a --resume to more
    epochs still trains more; `spikescan eval` on a small subset; other commands unchanged."""
    tokens = shlex.split(cmd, comments=True)
    if tokens[:2] == ["spikescan", "train"]:
        ranks = {n: r + 1 for r, n in enumerate(sorted(set(all_epochs)))}
        for k, n in _epochs(tokens):
            rank = str(ranks.get(n, 1))
            tokens[k] = rank if tokens[k] != f"--epochs={n}" else f"--epochs={rank}"
        if not _epochs(tokens):
            tokens += ["--epochs", "1"]
        tokens += ["--limit-train", TINY_LIMIT, "--limit-eval", TINY_LIMIT]
    elif tokens[:2] == ["spikescan", "eval"]:
        tokens += ["--limit", TINY_LIMIT]
    else:
        return cmd
    return shlex.join(tokens)


def static_problems(block: Block) -> list[str]:
    """Why `block` can neither run as written nor is marked as not runnable ([] if fine)."""
    w = block.where
    if block.lang not in RUN_LANGS | TEXT_LANGS:
        return [f"{w}: unknown block language {block.lang!r}; use python, bash, sh, console, snn, "
                f"text or none (or teach tests/docs/test_doc_blocks.py the new one)"]
    if block.marker is not None:
        if block.marker not in MARKERS:
            return [f"{w}: unknown doc-test marker {block.marker!r} (known: {', '.join(sorted(MARKERS))})"]
        if block.lang not in MARKERS[block.marker]:
            return [f"{w}: marker {block.marker!r} does not apply to a {block.lang or 'text'} block"]
        if not block.reason:
            return [f"{w}: marker {block.marker!r} needs a reason: <!-- doc-test: {block.marker} (why) -->"]
        if block.marker == "skip":
            return []
    if block.lang in SHELL_LANGS:
        cmds = shell_commands(block)
        if not cmds:
            return [f"{w}: no command in the block"]
        return [f"{block.path}:{n}: `{c}` is not a spikescan command, so the docs test cannot run it; "
                f"mark the block with <!-- doc-test: skip (reason) --> on the line before its fence"
                for n, c in cmds if not is_spikescan_command(c)]
    return []


def load(path: str) -> list[Block]:
    blocks, problems = parse_blocks((ROOT / path).read_text(encoding="utf-8"), path)
    assert not problems, "\n".join(problems)
    return blocks


# --------------------------------------------------------------------------- running


def _scratch(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "models", tmp_path / "models")
    return tmp_path


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["MPLBACKEND"] = "Agg"
    env.pop("SPIKESCAN_DEBUG", None)
    return env


def _tail(text: str, n: int = 3000) -> str:
    text = text.replace("\r", "\n")
    return text if len(text) <= n else "..." + text[-n:]


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self):
        for st in self.streams:
            st.flush()


def run_python(block: Block, ns: dict) -> None:
    # pad with newlines so that tracebacks give the line numbers of the markdown file
    code = compile("\n" * block.line + block.body, str(ROOT / block.path), "exec")
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(_Tee(sys.stdout, buf)):
            exec(code, ns)
    except BaseException as e:  # noqa: BLE001 (SystemExit from a block is a failure too)
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
        pytest.fail(f"{block.where} raised {type(e).__name__}: {e}\n{tb}", pytrace=False)
    printed = {" ".join(line.split()) for line in buf.getvalue().split("\n")}
    for k, code_line in enumerate(block.body.split("\n")):
        m = CLAIM.search(code_line)
        if m and " ".join(m.group("text").split()) not in printed:
            pytest.fail(f"{block.path}:{block.line + 1 + k}: the comment claims the output "
                        f"`{m.group('text')}`, but the block printed:\n{buf.getvalue()}", pytrace=False)


def run_shell(block: Block, cwd: Path) -> None:
    cmds = shell_commands(block)
    all_epochs = tuple(n for _, c in cmds if c.startswith("spikescan train")
                       for _, n in _epochs(shlex.split(c, comments=True)))
    for n, cmd in cmds:
        run = tiny_command(cmd, all_epochs) if block.marker == "tiny" else cmd
        try:
            p = subprocess.run(["bash", "-c", run], cwd=cwd, env=_env(), capture_output=True,
                               text=True, timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{block.path}:{n}: `{run}` did not finish in {COMMAND_TIMEOUT_S} s", pytrace=False)
        if p.returncode != 0 or "internal error" in p.stderr:
            pytest.fail(f"{block.path}:{n}: `{run}` exited with {p.returncode}\n--- stdout:\n"
                        f"{_tail(p.stdout)}\n--- stderr:\n{_tail(p.stderr)}", pytrace=False)


def run_snn(block: Block, cwd: Path) -> None:
    f = cwd / "models" / f"_doc_{Path(block.path).stem}_{block.line}.snn"
    f.write_text(block.body + "\n", encoding="utf-8")
    p = subprocess.run(["bash", "-c", f"spikescan check {shlex.quote(str(f.relative_to(cwd)))}"],
                       cwd=cwd, env=_env(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    out = p.stdout + p.stderr
    if block.marker == "error":
        if p.returncode != 1 or "error[E" not in out or "internal error" in out:
            pytest.fail(f"{block.where}: a marked error example, but `spikescan check` exited "
                        f"{p.returncode} without a diagnostic:\n{out}", pytrace=False)
    elif p.returncode != 0:
        pytest.fail(f"{block.where}: `spikescan check` fails on it (line numbers are counted "
                    f"from the line after the fence):\n{out}", pytrace=False)


def run_file(blocks: list[Block], cwd: Path) -> int:
    """Run every block of one file in order; returns how many ran."""
    ns: dict = {"__name__": "__main__"}
    ran = 0
    for b in blocks:
        if b.lang in TEXT_LANGS or b.marker == "skip":
            continue
        if b.lang == "python":
            run_python(b, ns)
        elif b.lang == "snn":
            run_snn(b, cwd)
        else:
            run_shell(b, cwd)
        ran += 1
    return ran


@pytest.fixture
def doc_session(tmp_path, monkeypatch):
    """A scratch folder as the working directory, with models/ in it, matplotlib headless, and
    the global RNG states restored afterwards (the docs seed them)."""
    import numpy as np
    import torch

    cwd = _scratch(tmp_path)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    yield cwd
    torch.set_rng_state(torch_state)
    np.random.set_state(np_state)
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


# --------------------------------------------------------------------------- the tests


def test_the_docs_are_found():
    assert "docs/tutorial.md" in DOC_FILES and "docs/language.md" in DOC_FILES
    assert all((ROOT / f).is_file() for f in DOC_FILES)


@pytest.mark.parametrize("path", DOC_FILES)
def test_every_block_runs_or_is_marked(path):
    problems = [p for b in load(path) for p in static_problems(b)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", DOC_FILES)
def test_doc_blocks_run(path, doc_session):
    blocks = load(path)
    run_file(blocks, doc_session)
    # nothing the docs wrote went into the repository's models/
    assert not list((ROOT / "models").glob("_doc_*"))


def test_the_tutorial_runs_every_python_block():
    blocks = load("docs/tutorial.md")
    py = [b for b in blocks if b.lang == "python"]
    skipped = [b for b in py if b.marker == "skip"]
    assert len(py) >= 10 and len(skipped) <= 1, [b.where for b in skipped]


def test_no_doc_points_outside_the_repository():
    """Users get the repository, not the team's ../shared folder."""
    bad = [f"{f}:{k + 1}" for f in DOC_FILES
           for k, line in enumerate((ROOT / f).read_text(encoding="utf-8").split("\n")) if "../shared" in line]
    assert not bad, bad


# --------------------------------------------------------------------------- the checker itself

SAMPLE = """\
# Title

```python
x = 2
print(x * 21)   # -> 42
```

<!-- doc-test: skip (installs packages) -->
```bash
pip install spikescan
```

```bash
spikescan check models/*.snn   # a comment
spikescan train models/yinyang.snn --data yinyang \\
    --epochs 20 --out runs/yy
```

```
plain text
```
"""


def test_parser_finds_blocks_lines_and_markers():
    blocks, problems = parse_blocks(SAMPLE, "x.md")
    assert problems == []
    assert [(b.line, b.lang, b.marker) for b in blocks] == [
        (3, "python", None), (9, "bash", "skip"), (13, "bash", None), (19, "", None)]
    assert blocks[1].reason == "installs packages"
    assert shell_commands(blocks[2]) == [
        (14, "spikescan check models/*.snn   # a comment"),
        (15, "spikescan train models/yinyang.snn --data yinyang --epochs 20 --out runs/yy")]
    assert [static_problems(b) for b in blocks] == [[], [], [], []]


def test_unmarked_or_badly_marked_blocks_are_refused():
    text = "```bash\npip install x\nspikescan check a.snn\n```\n"
    (b,), _ = parse_blocks(text, "y.md")
    assert "`pip install x` is not a spikescan command" in static_problems(b)[0]
    (b,), _ = parse_blocks("<!-- doc-test: skip -->\n" + text, "y.md")
    assert "needs a reason" in static_problems(b)[0]
    (b,), _ = parse_blocks("<!-- doc-test: error (bad) -->\n" + text, "y.md")
    assert "does not apply" in static_problems(b)[0]
    (b,), _ = parse_blocks("```yaml\na: 1\n```\n", "y.md")
    assert "unknown block language" in static_problems(b)[0]
    _, problems = parse_blocks("<!-- doc-test: skip (x) -->\n\n```bash\npip\n```\n", "y.md")
    assert "just before a code fence" in problems[0]
    _, problems = parse_blocks("<!-- no-run -->\n```python\nx\n```\n", "y.md")
    assert "malformed marker" in problems[0]
    _, problems = parse_blocks("```python\nx = 1\n", "y.md")
    assert "never closed" in problems[0]


def test_tiny_shrinks_training_only():
    assert tiny_command("spikescan train m.snn --data yinyang --epochs 20 --out runs/yy", (20, 30)) == (
        "spikescan train m.snn --data yinyang --epochs 1 --out runs/yy --limit-train 64 --limit-eval 64")
    assert tiny_command("spikescan train m.snn --epochs 30 --resume", (20, 30)) == (
        "spikescan train m.snn --epochs 2 --resume --limit-train 64 --limit-eval 64")
    assert tiny_command("spikescan train m.snn --epochs=5", (5,)) == (
        "spikescan train m.snn --epochs=1 --limit-train 64 --limit-eval 64")
    assert tiny_command("spikescan train m.snn --data yinyang  # comment") == (
        "spikescan train m.snn --data yinyang --epochs 1 --limit-train 64 --limit-eval 64")
    assert tiny_command("spikescan eval runs/yy/best.pt --split test") == (
        "spikescan eval runs/yy/best.pt --split test --limit 64")
    assert tiny_command("spikescan check models/*.snn  # x") == "spikescan check models/*.snn  # x"


def test_a_failing_block_names_file_and_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = "```python\nx = 1\n```\n\ntext\n\n```python\ny = x + 1\nraise ValueError('boom')\n```\n"
    blocks, _ = parse_blocks(text, "README.md")
    with pytest.raises(pytest.fail.Exception) as e:
        run_file(blocks, tmp_path)
    assert "README.md:7 (python block) raised ValueError: boom" in str(e.value)
    assert "line 9" in str(e.value)   # the traceback counts lines of the markdown file


def test_a_wrong_output_claim_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks, _ = parse_blocks("```python\nprint(6 * 7)   # -> 42\nprint(1)   # -> 2\n```\n", "x.md")
    with pytest.raises(pytest.fail.Exception) as e:
        run_file(blocks, tmp_path)
    assert "x.md:3: the comment claims the output `2`" in str(e.value)


def test_a_failing_command_names_file_and_line(tmp_path):
    _scratch(tmp_path)
    blocks, _ = parse_blocks("```bash\nspikescan check models/lif.snn\nspikescan check models/nope.snn\n```\n", "x.md")
    with pytest.raises(pytest.fail.Exception) as e:
        run_file(blocks, tmp_path)
    assert "x.md:3: `spikescan check models/nope.snn` exited with 1" in str(e.value)
