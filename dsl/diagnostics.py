"""Diagnostics: what the dsl reports about a user's .snn file instead of raising tracebacks.

A Diagnostic has a code (E001...), a message, a span, a fix hint and a severity. Rendering
follows the compiler convention

    models/bad.snn:4:19: error[E020]: non-linear dynamics: ...
        dv/dt = v * v / tau_m
                ^~~~~
    hint: ...

The source text is needed to print the offending line; the loader records every file it reads
in a `sources` dict (file name -> text) that travels with the diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from .ast import Span

ERROR = "error"
WARNING = "warning"

# One line per code: the short title used by docs/language.md and `--explain`-style listings.
CODES: dict[str, str] = {
    # syntax and files
    "E001": "unexpected token",
    "E002": "unexpected end of file",
    "E003": "invalid character",
    "E004": "file cannot be read or is not UTF-8 text",
    "E005": "nesting too deep",
    "E006": "file too large",
    "E007": "imported file not found",
    "E008": "import cycle",
    "E009": "imported name not found",
    # names and structure of neurons
    "E010": "unknown name",
    "E011": "duplicate name",
    "E012": "assignment to a parameter",
    "E013": "ODE for an undeclared variable",
    "E014": "state variable without an ODE",
    "E015": "duplicate ODE",
    "E016": "malformed derivative",
    "E017": "duplicate section",
    "E018": "assignment to an unknown variable",
    "E019": "unknown function",
    # linearity
    "E020": "non-linear dynamics",
    "E021": "threshold not linear in the state",
    "E022": "input jump not linear in the weight",
    "E023": "reset not affine in the state",
    "E024": "parameter default or initial value not constant",
    "E025": "reset or refractory period without a threshold",
    "E026": "name too long",
    "E027": "abs() of an expression of unknown sign",
    # units
    "E030": "unit mismatch",
    "E031": "ODE right-hand side is not a rate (1/time)",
    "E032": "value must be dimensionless",
    "E033": "value must be a time",
    "E034": "non-positive time constant",
    "E035": "invalid exponent",
    "E036": "negative duration",
    "E037": "number out of range",
    # networks
    "E040": "layer size must be positive",
    "E041": "unknown neuron type",
    "E042": "readout of a missing layer",
    "E043": "connection from an unknown population",
    "E044": "unknown parameter override",
    "E045": "duplicate population name",
    "E046": "unknown connection kind",
    "E047": "invalid connection option",
    "E048": "invalid readout",
    "E049": "layer without inputs",
    "E050": "unknown input port",
    "E051": "positional argument not allowed",
    "E052": "dense connection from a later layer",
    "E053": "network too large",
    "E054": "invalid discrete-time neuron declaration",
    "E055": "invalid or missing network time grid",
    "E056": "discrete-time and exact event layers connected",
    "E057": "number of bins of a psn neuron differs from the network's time grid",
    "E058": "unsupported connection or override on a discrete-time layer",
    # data-dependent weight init (dsl/checks.py auto_init_option, runtime/auto_init.py)
    "E096": "target rate of `init = auto(...)` not positive or above 1 kHz",
    "E097": "target rate of `init = auto(...)` is not a rate",
    # convolution and pooling (dsl/conv.py, docs/language.md)
    "E080": "invalid option of a conv2d or pool2d connection",
    "E081": "conv2d or pool2d from a population that is not [C, H, W] or not earlier",
    "E082": "layer shape does not match its conv2d or pool2d connection",
    "E083": "conv2d or pool2d alongside other connections of a layer",
    "E084": "population shape that is neither [n] nor [C, H, W]",
    # sparse autonomous networks (dsl/sparse.py, docs/sparse.md)
    "E085": "invalid `k` of a sparse connection",
    "E086": "invalid option of a sparse connection",
    "E087": "unsupported structure in a sparse network",
    "E088": "invalid network constant",
    "E089": "invalid initial-state distribution",
    "E090": "unsupported neuron in a sparse network",
    "E091": "invalid dense input connection of a sparse network",
    "E092": "input population of a sparse network that drives no layer",
    # recurrent connections (dsl/recurrence.py)
    "E093": "recurrent connection that closes no cycle",
    "E094": "recurrent connection from or into a non-spiking layer",
    "E095": "recurrent group without input from outside",
    # imports (continued)
    "E070": "import outside the search path",
    "E071": "import of a file that is not a .snn",
    "E072": "invalid import path",
    # warnings: the file is valid, but probably not what was meant
    "W001": "the reset leaves the neuron at or above its threshold",
}


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Optional[Span]
    hint: Optional[str] = None
    severity: str = ERROR

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def render(self, source: Optional[str] = None) -> str:
        """`file:line:col: error[E004]: message`, the source line, a caret line, the hint."""
        where = str(self.span) if self.span is not None else "<unknown>"
        out = [f"{where}: {self.severity}[{self.code}]: {self.message}"]
        if self.span is not None and source is not None:
            line, caret = source_excerpt(source, self.span)
            if line is not None:
                out += ["    " + line, "    " + caret]
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)


def source_excerpt(source: str, span: Span) -> tuple[Optional[str], str]:
    """The span's first line (tabs expanded to one space so the caret lines up) and a caret
    line `^~~~` under the span (to the end of that line if the span is multi-line)."""
    lines = source.split("\n")
    if not 1 <= span.line <= len(lines):
        return None, ""
    text = lines[span.line - 1].rstrip("\r").replace("\t", " ")
    if len(text) > 200:  # never dump a megabyte-long line: show a window around the span
        start = max(0, span.col - 80)
        text = ("..." if start else "") + text[start : start + 160]
        col = span.col - start + (3 if start else 0)
    else:
        col = span.col
    col = max(1, min(col, len(text) + 1))
    if span.end_line == span.line:
        width = max(1, span.end_col - span.col)
    else:
        width = max(1, len(text) - col + 1)
    width = min(width, max(1, len(text) - col + 1))
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text, " " * (col - 1) + "^" + "~" * (width - 1)


def showable(file: str) -> bool:
    """Whether lines of `file` may be echoed: .snn files and in-memory texts (`<string>`) only,
    so a diagnostic about a foreign file never prints its content."""
    return file.endswith(".snn") or (file.startswith("<") and file.endswith(">"))


def render_all(diags: Iterable[Diagnostic], sources: Mapping[str, str] | None = None) -> str:
    sources = sources or {}
    return "\n".join(d.render(sources.get(d.span.file) if d.span and showable(d.span.file) else None)
                     for d in diags)


class DiagnosticError(Exception):
    """Raised by `dsl.load` when a file has errors; carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic], sources: Mapping[str, str] | None = None):
        self.diagnostics = list(diagnostics)
        self.sources = dict(sources or {})
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return render_all(self.diagnostics, self.sources)


def plural(n: int, noun: str) -> str:
    """`1 neuron`, `2 neurons`, `0 errors` (CLI summaries)."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def has_errors(diags: Iterable[Diagnostic]) -> bool:
    return any(d.is_error for d in diags)
