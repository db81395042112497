"""Reading .snn files and resolving imports, safely: a model file is untrusted input.

    read_text(path)                      -> (text | None, diagnostics)
    search_roots(main_file)              -> the folders imports may come from
    resolve_import(imp, importer, roots) -> (path | None, diagnostics)

Only regular files are read (a FIFO would block, /dev/zero never ends), at most
parser.MAX_BYTES + 1 bytes of them. Imports are relative paths ending in `.snn`, resolved
against the importing file's folder, then against each $SPIKESCAN_PATH folder; the target,
after resolving symlinks and `..`, must lie inside the main file's folder or a $SPIKESCAN_PATH
folder. So `import "/etc/passwd"` or `import "../../x"` is refused before anything is read,
and no diagnostic ever shows a line of a file that is not a .snn (see diagnostics.showable).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Optional

from . import ast
from . import parser as _parser
from .diagnostics import Diagnostic

SUFFIX = ".snn"
PATH_MAX = 4096  # bytes, Linux's limit; longer paths cannot be opened anywhere
NAME_MAX = 255  # bytes per path component


def _file_span(file: str) -> ast.Span:
    return ast.Span(file, 1, 1, 1, 2)


def read_text(path: str, name: Optional[str] = None) -> tuple[Optional[str], list[Diagnostic]]:
    """File contents as text, or a diagnostic (missing, not a regular file, unreadable, too
    large, not UTF-8) located in `name` (default: the path). Opens without blocking and checks
    the opened file, so a FIFO or a device cannot hang the reader."""
    text, diags = _read(path)
    if name is not None and name != path:
        diags = [replace(d, span=replace(d.span, file=name)) for d in diags]
    return text, diags


def _read(path: str) -> tuple[Optional[str], list[Diagnostic]]:
    span = _file_span(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None, [Diagnostic("E004", f"no such file: {path}", span, "check the path")]
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        return None, [Diagnostic("E004", f"cannot read {path}: {_reason(e)}", span,
                                 "check the path and its permissions")]
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, [Diagnostic("E004", f"cannot read {path}: not a regular file", span,
                                     "give the path of a .snn text file")]
        limit = _parser.MAX_BYTES
        if info.st_size > limit:
            return None, [_too_large(path, info.st_size)]
        data = _read_at_most(fd, limit + 1)
    except OSError as e:
        return None, [Diagnostic("E004", f"cannot read {path}: {_reason(e)}", span,
                                 "check the path and its permissions")]
    finally:
        os.close(fd)
    if len(data) > limit:  # the file grew after the stat
        return None, [_too_large(path, len(data))]
    return _decode(data, path)


def _read_at_most(fd: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(1 << 20, n - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _too_large(path: str, size: int) -> Diagnostic:
    return Diagnostic("E006", f"file too large ({size} bytes; the limit is {_parser.MAX_BYTES})",
                      _file_span(path), "split the model into several files joined with `import`")


def _decode(data: bytes, path: str) -> tuple[Optional[str], list[Diagnostic]]:
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        return None, [Diagnostic("E004", f"file is not valid UTF-8 (byte 0x{data[e.start]:02x} "
                                 f"at offset {e.start})", ast.Span(path, line, col, line, col + 1),
                                 "save the file as UTF-8 text")]


def _reason(e: BaseException) -> str:
    if isinstance(e, ValueError):
        return "the path contains a NUL byte"
    return e.strerror or str(e)


# ----------------------------------------------------------------------------- imports


def search_roots(main_file: str) -> list[str]:
    """The main file's folder, then the $SPIKESCAN_PATH folders (colon-separated), resolved."""
    try:
        roots = [os.path.dirname(os.path.realpath(main_file))]
    except ValueError:  # a NUL byte: the file cannot be read, read_text reports it
        roots = [os.path.realpath(".")]
    for entry in os.environ.get("SPIKESCAN_PATH", "").split(os.pathsep):
        if entry and "\0" not in entry and os.path.isdir(entry):
            real = os.path.realpath(entry)
            if real not in roots:
                roots.append(real)
    return roots


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _path_problem(p: str) -> Optional[tuple[str, str, str]]:
    """(code, message, hint) if the import string itself is refused."""
    if "\0" in p:
        return "E072", "the import path contains a NUL byte", "write a plain relative path"
    raw = os.fsencode(p) if p else b""
    if len(raw) > PATH_MAX or any(len(part) > NAME_MAX for part in raw.split(b"/")):
        return ("E072", f"the import path is too long ({len(raw)} bytes; the limits are "
                f"{PATH_MAX} bytes and {NAME_MAX} per name)", "use a shorter path")
    if os.path.isabs(p) or p.startswith("~"):
        return ("E070", f"absolute import path \"{p}\"", "import paths are relative to the "
                "importing file; put shared files in a folder listed in $SPIKESCAN_PATH")
    if not p.endswith(SUFFIX) or p.endswith("/" + SUFFIX) or p == SUFFIX:
        return ("E071", f"\"{p}\" is not a .snn file", "only .snn files can be imported")
    return None


def resolve_import(imp: ast.Import, importer: str, roots: list[str]
                   ) -> tuple[Optional[str], list[Diagnostic]]:
    """The real path of an import's target, or E070/E071/E072 (refused) or E007 (not found).
    Candidates: the importing file's folder, then each search root; the first existing one
    wins, and it must lie inside a root after resolving symlinks."""
    problem = _path_problem(imp.path)
    if problem is not None:
        return None, [Diagnostic(problem[0], problem[1], imp.span, problem[2])]
    bases = [os.path.dirname(os.path.realpath(importer))] + roots[1:]
    looked = []
    for base in bases:
        candidate = os.path.join(base, imp.path)
        looked.append(os.path.normpath(candidate))
        try:
            real = os.path.realpath(candidate)
            exists = os.path.exists(real)
        except (OSError, ValueError) as e:
            if isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:
                return None, [Diagnostic("E072", "the import path is too long after resolving "
                                         "symlinks", imp.span, "use a shorter path")]
            continue
        if not exists:
            continue
        if not any(_inside(real, r) for r in roots):
            return None, [Diagnostic("E070", f"import \"{imp.path}\" resolves to {real}, outside "
                                     "the search path (" + ", ".join(roots) + ")", imp.span,
                                     "keep imported files next to the model or below it, or add "
                                     "their folder to $SPIKESCAN_PATH")]
        if not real.endswith(SUFFIX):
            return None, [Diagnostic("E071", f"import \"{imp.path}\" resolves to {real}, which is "
                                     "not a .snn file", imp.span, "only .snn files can be imported")]
        return real, []
    return None, [Diagnostic("E007", f"imported file not found: \"{imp.path}\" (looked for "
                             + ", ".join(dict.fromkeys(looked)) + ")", imp.span,
                             "import paths are relative to the importing file (then to the "
                             "$SPIKESCAN_PATH folders)")]
