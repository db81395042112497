"""Loading .snn files: read (with encoding/size guards), parse, resolve imports, run the checks.

    load(path) -> ast.Module            raises DiagnosticError on any error
    load_with_sources(path)             -> (Module, {file: text}) for the compiler's hash
    check_source(text, filename)        -> (Module | None, diagnostics)
    check_file(path)                    -> (Module | None, diagnostics)

Imports are resolved relative to the importing file, within the search path of dsl/files.py
(the main file's folder and $SPIKESCAN_PATH; E070-E072 otherwise). Each file is parsed and checked once per
call (a cache keyed by resolved path); a file that is being loaded and is imported again is an
import cycle (E008). `Module.visible_neurons` holds the file's own neurons plus the imported
ones (`import "f"` brings every neuron visible in f, `from "f" import A` only A).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from . import ast
from .checks import check_module
from .diagnostics import Diagnostic, DiagnosticError, has_errors, showable
from .files import read_text, resolve_import, search_roots
from .parser import parse_source


class _Loader:
    def __init__(self, main_file: str) -> None:
        self.roots = search_roots(main_file)  # imports must stay inside these folders
        self.sources: dict[str, str] = {}
        self.modules: dict[str, Optional[ast.Module]] = {}  # resolved path -> module
        self.loading: list[str] = []  # resolved paths on the import stack
        self.diags: list[Diagnostic] = []

    def load_text(self, text: str, filename: str, key: str) -> Optional[ast.Module]:
        self.sources[filename] = text
        self.loading.append(key)
        try:
            module, diags = parse_source(text, filename)
            self.diags += diags
            if module is None:
                return None
            imported, unresolved = self.resolve_imports(module, filename)
            module.visible_neurons = dict(imported)
            self.diags += check_module(module, imported, unresolved)
            return module
        finally:
            self.loading.pop()

    def load_path(self, path: str, display: str) -> Optional[ast.Module]:
        try:
            key = os.path.realpath(path)
        except ValueError:  # a NUL byte: read_text reports it
            key = path
        if key in self.modules:
            return self.modules[key]
        text, diags = read_text(path, display)
        self.diags += diags
        if text is None:
            self.modules[key] = None
            return None
        module = self.load_text(text, display, key)
        self.modules[key] = module
        return module

    def resolve_imports(self, module: ast.Module, filename: str
                        ) -> tuple[dict[str, ast.Neuron], frozenset[str]]:
        """Neurons brought in by the imports (name -> Neuron), with E007/E008/E009/E011, and the
        names an import that failed would have brought ("*" for a whole-file import), so that
        their uses are not reported again as unknown neurons."""
        visible: dict[str, ast.Neuron] = {}
        unresolved: set[str] = set()
        for imp in module.imports:
            failed = set(imp.names) if imp.names is not None else {"*"}
            key, diags = resolve_import(imp, filename, self.roots)
            if key is None:
                self.diags += diags
                unresolved |= failed
                continue
            if key in self.loading:
                chain = " -> ".join(Path(p).name for p in self.loading[self.loading.index(key):])
                self.diags.append(Diagnostic("E008", f"import cycle: {chain} -> {Path(key).name}",
                                             imp.span, "move the shared neurons into a third file "
                                             "that both files import"))
                unresolved |= failed
                continue
            sub = self.load_path(key, _display(filename, imp.path, key))
            if sub is None:
                unresolved |= failed
                continue
            offered = sub.visible_neurons
            if imp.names is None:
                chosen = dict(offered)
            else:
                chosen = {}
                networks = {n.name for n in sub.networks}
                for name in imp.names:
                    if name in offered:
                        chosen[name] = offered[name]
                    else:
                        what = (f"`{name}` is a network; only neurons can be imported"
                                if name in networks else f"no neuron `{name}` in \"{imp.path}\"")
                        known = ", ".join(sorted(offered)) or "none"
                        self.diags.append(Diagnostic("E009", what, imp.span,
                                                     f"neurons available there: {known}"))
                        unresolved.add(name)
            for name, neuron in chosen.items():
                prev = visible.get(name)
                if prev is not None and prev is not neuron:
                    self.diags.append(Diagnostic("E011", f"neuron `{name}` is imported twice from "
                                                 "different files", imp.span,
                                                 "import it from one file only"))
                    continue
                visible[name] = neuron
        return visible, frozenset(unresolved)


def _display(importer: str, target: str, real: str) -> str:
    """The file name shown in diagnostics: relative like the importer's when the target is
    next to it, else the resolved path (a $SPIKESCAN_PATH file)."""
    near = os.path.normpath(os.path.join(os.path.dirname(importer), target))
    try:
        if os.path.samefile(near, real):
            return near
    except (OSError, ValueError):
        pass
    return real


def _ordered(diags: list[Diagnostic]) -> list[Diagnostic]:
    """Files in the order they were first reported, then by position within each file."""
    first: dict[str, int] = {}
    for d in diags:
        first.setdefault(d.span.file if d.span else "", len(first))

    def key(d: Diagnostic):
        if d.span is None:
            return (first[""], 0, 0)
        return (first[d.span.file], d.span.line, d.span.col)

    return sorted(diags, key=key)


def check_source(text: str, filename: str = "<string>") -> tuple[Optional[ast.Module], list[Diagnostic]]:
    """Parse and check .snn text; imports are resolved relative to `filename`'s folder."""
    loader = _Loader(filename)
    module = loader.load_text(text, filename, os.path.realpath(filename))
    return module, _ordered(loader.diags)


def check_file(path: str | os.PathLike) -> tuple[Optional[ast.Module], list[Diagnostic]]:
    module, diags, _ = _check_file(path)
    return module, diags


def _check_file(path) -> tuple[Optional[ast.Module], list[Diagnostic], dict[str, str]]:
    loader = _Loader(str(path))
    module = loader.load_path(str(path), os.path.normpath(str(path)))
    return module, _ordered(loader.diags), loader.sources


def load(path: str | os.PathLike) -> ast.Module:
    """Load a checked module (imports resolved, visible_neurons filled); DiagnosticError if any
    error is found in the file or the files it imports."""
    return load_with_sources(path)[0]


def load_with_sources(path: str | os.PathLike) -> tuple[ast.Module, dict[str, str]]:
    """`load`, plus the text of every file read (file name as in the spans -> text): the main
    file first, then its imports. The compiler hashes and stores exactly these texts."""
    module, diags, sources = _check_file(path)
    if module is None or has_errors(diags):
        raise DiagnosticError([d for d in diags if d.is_error] or diags, sources)
    return module, sources


def sources_of(diags: list[Diagnostic]) -> dict[str, str]:
    """Best-effort source texts for rendering diagnostics of files on disk."""
    out = {}
    for d in diags:
        if (d.span is not None and d.span.file not in out and showable(d.span.file)
                and os.path.isfile(d.span.file)):
            text, _ = read_text(d.span.file)
            if text is not None:
                out[d.span.file] = text
    return out
