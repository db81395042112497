"""Typed AST of the .snn language. Every node carries a source span.

This module is the contract between the parser (dsl/parser.py), the semantic checks
(dsl/checks.py) and the compiler's analysis (compiler/analysis.py). It imports nothing heavy.

Numbers keep the unit they were written with; `dsl.units` converts them (ms is the time unit
of the whole project: `s`, `ms`, `us` convert to ms, numbers without a unit are dimensionless).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union


@dataclass(frozen=True)
class Span:
    """A 1-based, inclusive-start, exclusive-end source range."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


# ----------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Num:
    value: float
    unit: Optional[str]  # "ms" | "s" | "us" | None (dimensionless)
    span: Span


@dataclass(frozen=True)
class Name:
    id: str
    span: Span


@dataclass(frozen=True)
class UnaryOp:
    op: str  # "-" | "+"
    operand: "Expr"
    span: Span


@dataclass(frozen=True)
class BinOp:
    op: str  # "+" | "-" | "*" | "/" | "^"
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class Call:
    func: str  # e.g. "exp", "learnable", "normal": meaning depends on context
    args: tuple["Expr", ...]
    kwargs: tuple[tuple[str, "Expr"], ...]
    span: Span


Expr = Union[Num, Name, UnaryOp, BinOp, Call]


# ----------------------------------------------------------------------------- neurons


@dataclass(frozen=True)
class ParamDecl:
    name: str
    default: Expr  # usually a Num with a unit
    span: Span


@dataclass(frozen=True)
class StateDecl:
    name: str
    init: Expr
    span: Span


@dataclass(frozen=True)
class ODE:
    """`dvar/dt = rhs`"""

    var: str
    rhs: Expr
    span: Span


@dataclass(frozen=True)
class Assign:
    """`target = value`, `target += value` or `target -= value` (in `on input` / `on spike`)."""

    target: str
    op: str  # "=" | "+=" | "-="
    value: Expr
    span: Span


@dataclass(frozen=True)
class InputPort:
    """`on input(w) { i += w }`; the port name is the word after `on` (input, input_exc, ...)."""

    name: str
    weight: str  # the bound weight variable, e.g. "w"
    body: tuple[Assign, ...]
    span: Span


@dataclass(frozen=True)
class Threshold:
    """`spike when lhs >= rhs`; lhs must be linear in the state, rhs free of the state."""

    lhs: Expr
    rhs: Expr
    span: Span


@dataclass(frozen=True)
class Refractory:
    period: Expr  # a time
    span: Span


@dataclass(frozen=True)
class Neuron:
    name: str
    params: tuple[ParamDecl, ...]
    state: tuple[StateDecl, ...]
    dynamics: tuple[ODE, ...]
    inputs: tuple[InputPort, ...]
    threshold: Optional[Threshold]
    reset: tuple[Assign, ...]  # body of `on spike { ... }`, empty if absent
    refractory: Optional[Refractory]
    span: Span
    name_span: Span


@dataclass(frozen=True)
class DiscreteNeuron:
    """`neuron P = masked_psn(T = 32, k = 4, surrogate = atan(alpha = 2))`: a discrete-time neuron
    of a built-in kind (dsl/discrete.py checks it; runtime/psn.py runs it)."""

    name: str
    kind: str  # "psn" | "masked_psn" | "sliding_psn"
    args: tuple[tuple[str, Expr], ...]
    span: Span
    name_span: Span
    kind_span: Span


# ----------------------------------------------------------------------------- networks


@dataclass(frozen=True)
class InputPop:
    """`input x[5]`"""

    name: str
    size: int  # number of channels (the product of `shape`)
    span: Span
    shape: tuple[int, ...] = ()  # as written: (n,) or (C, H, W)
    size_span: Optional[Span] = None


@dataclass(frozen=True)
class Connection:
    """`dense(x, delays = learnable(max = 5 ms), init = normal(0, 0.5), port = input_exc)` or
    `recurrent(hidden, ...)`. `options` keeps the raw keyword arguments; `source` is the
    presynaptic population (for `recurrent` it defaults to the layer itself)."""

    kind: str  # "dense" | "recurrent"
    source: str
    options: tuple[tuple[str, Expr], ...]
    span: Span
    source_span: Span


@dataclass(frozen=True)
class ParamOverride:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Layer:
    """`layer hidden[120] = CubaLIF(tau_m = 20 ms) <- dense(x), recurrent(hidden)`"""

    name: str
    size: int
    neuron: str
    overrides: tuple[ParamOverride, ...]
    connections: tuple[Connection, ...]
    span: Span
    size_span: Span
    neuron_span: Span
    # `{ init v = uniform(0, 1) }`: seeded initial-state distributions (sparse networks, docs/sparse.md)
    state_init: tuple["StateInit", ...] = ()
    shape: tuple[int, ...] = ()  # as written: (n,) or (C, H, W); `size` is its product


@dataclass(frozen=True)
class StateInit:
    """`init v = uniform(0, 1)` in a layer body: the initial value of state `v`, drawn per neuron."""

    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Readout:
    """`readout out: first_spike` | `spike_count` | `li_integral` | `max_potential`"""

    layer: str
    kind: str
    args: tuple[tuple[str, Expr], ...]
    span: Span
    layer_span: Span


@dataclass(frozen=True)
class Setting:
    """`time_bins = 1 ms`: a network-wide setting."""

    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Network:
    name: str
    inputs: tuple[InputPop, ...]
    layers: tuple[Layer, ...]
    readouts: tuple[Readout, ...]
    span: Span
    settings: tuple[Setting, ...] = ()
    # `param K = 100`: named constants usable in the options of sparse connections and in state
    # initialisations (docs/sparse.md); Setting's fields (name, value, span) fit them.
    constants: tuple[Setting, ...] = ()


# ----------------------------------------------------------------------------- files


@dataclass(frozen=True)
class Import:
    """`import "lif.snn"` (everything) or `from "lif.snn" import CubaLIF, LIF`."""

    path: str
    names: Optional[tuple[str, ...]]
    span: Span


@dataclass
class Module:
    file: str
    imports: tuple[Import, ...]
    neurons: tuple[Neuron, ...]
    networks: tuple[Network, ...]
    # Filled by the loader after resolving imports: every neuron visible in this file by name,
    # including imported ones (which keep the spans of their own files).
    visible_neurons: dict[str, Neuron] = field(default_factory=dict)
    # Discrete-time neurons defined in this file (`neuron P = psn(...)`); local to the file.
    discrete_neurons: tuple[DiscreteNeuron, ...] = ()
