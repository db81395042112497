"""Intermediate representation shared by every backend: one NeuronIR per neuron type and one
NetworkIR per network. This is the single source of truth for the formulas: the analysis
(compiler/analysis.py) fills these from the checked AST, and every backend (torch codegen,
MLIR, Triton) prints code from the sympy expressions held here and nowhere else.

Conventions
- Time is in ms. Parameters are sympy Symbols named PARAM_PREFIX + the .snn name, real=True
  (ParamIR.name keeps the user's name for diagnostics and the params API). Every backend prints
  code from these symbols, so the prefix keeps a user's `D`, `exp`, `exprel`, `x0` or `lambda`
  from clashing with the names the generated code uses itself (D, x0.., w, l0.., adjX0..,
  helper functions, Python keywords): no internal name starts with the prefix.
- The state vector x has d entries, ordered so that A is lower triangular whenever the
  dependency graph of the dynamics is acyclic (x_j depends only on x_k with k <= j).
- Between events: dx/dt = A x + a0, so x(t0 + D) = Phi(D) x(t0) + phi(D), D = `DT` below.
- Input event of weight w on port k: x <- x + B[k] * w.
- Threshold: spike when c^T x crosses theta from below (c, theta None for non-spiking neurons).
- Reset at a spike: x <- R x + r; then the threshold is disabled for `t_ref` ms.
- Closed forms may use the special functions of compiler/special.py (exprel, phi2, ...), which
  every backend implements once; never raw differences of exponentials divided by differences
  of rates (0/0 at equal time constants).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import sympy

# The interval length symbol used in Phi, phi and the potential.
DT = sympy.Symbol("D", nonnegative=True)
PARAM_PREFIX = "p_"


def param_symbol(name: str) -> sympy.Symbol:
    """The IR symbol of the .snn parameter `name` (mangled, see the module docstring)."""
    return sympy.Symbol(PARAM_PREFIX + name, real=True)


@dataclass(frozen=True)
class ParamIR:
    name: str
    default: float  # in ms for times
    dim: int  # power of time: 1 for a time constant, 0 dimensionless, -1 a rate
    symbol: sympy.Symbol


@dataclass
class IsolationChain:
    """Functionals that isolate the stationary points of u(D) = c^T x(D) on an interval.

    With y(D) = dx/dD = A x(D) + a0 and rows l_0 = c^T, l_k = l_{k-1} (A - lam_k I):
    l_k y = exp(lam_k D) d/dD (exp(-lam_k D) l_{k-1} y), so zeros of l_{k-1} y are separated by
    zeros of l_k y (Rolle), and l_m y has a constant sign (a single mode, or zero). The runtime
    isolates the zeros of u' = l_0 y from the top of the chain down, then brackets the first
    upward crossing of u = theta on a monotone piece. `rows[k]` is l_k (1 x d), `rates[k]` lam_{k+1}.
    """

    rows: list[sympy.Matrix]
    rates: list[sympy.Expr]


@dataclass
class NeuronIR:
    name: str
    state: tuple[str, ...]
    params: tuple[ParamIR, ...]
    init: sympy.Matrix  # d x 1 initial state
    A: sympy.Matrix  # d x d
    a0: sympy.Matrix  # d x 1
    ports: dict[str, sympy.Matrix]  # port name -> B (d x 1), x += B * w
    c: Optional[sympy.Matrix]  # d x 1 threshold functional, None if the neuron never spikes
    theta: Optional[sympy.Expr]
    R: sympy.Matrix  # d x d reset matrix (identity when there is no reset)
    r: sympy.Matrix  # d x 1 reset offset
    t_ref: sympy.Expr  # refractory period in ms (0 if none)
    # ---- derived by compiler/analysis.py
    Phi: Optional[sympy.Matrix] = None  # d x d closed form in DT and params
    phi: Optional[sympy.Matrix] = None  # d x 1 closed form in DT and params
    reset_invariant: tuple[int, ...] = ()  # state indices untouched by (and independent of) resets
    chain: Optional[IsolationChain] = None
    # Sufficient, cheap, exact test "no crossing in this interval": a list of linear forms
    # (1 x d rows, offsets) such that if all(row @ x + off < theta) at the interval start, u stays
    # below theta for the whole interval. Empty if no such test was derived.
    no_cross_rows: list[tuple[sympy.Matrix, sympy.Expr]] = field(default_factory=list)
    solver: str = "isolate"  # "none" (no threshold), "linear", "peak2" (two modes), "isolate"
    notes: list[str] = field(default_factory=list)  # human-readable analysis notes for --explain
    # d x 1 functional read by readouts (max_potential, li_integral): c when there is a threshold,
    # else the first *declared* state variable (the state order above may put it later, e.g. LI
    # with (v, i) declared is stored as (i, v) so that A is lower triangular).
    potential: Optional[sympy.Matrix] = None

    @property
    def d(self) -> int:
        return len(self.state)

    @property
    def param_symbols(self) -> tuple[sympy.Symbol, ...]:
        return tuple(p.symbol for p in self.params)

    def defaults(self) -> dict[str, float]:
        return {p.name: p.default for p in self.params}


@dataclass(frozen=True)
class DelaySpec:
    learnable: bool
    max: float  # ms
    init: float  # ms (initial value; learnable delays are initialised uniformly in [0, init] when init < 0)


@dataclass(frozen=True)
class InitSpec:
    # "normal" | "uniform" | "constant" (a = b = value) | "default" | "auto" (a = target rate in
    # 1/ms: the default init, scaled on the first training batch so the layer fires at that mean
    # rate over the trial; runtime/auto_init.py)
    kind: str
    a: float = 0.0
    b: float = 1.0

    @property
    def rate_hz(self) -> float:
        """The target rate of an "auto" init in Hz."""
        return self.a * 1000.0


AUTO_RATE = 0.01  # 1/ms: 10 Hz, the target rate of `auto()` and of connections without init
AUTO_KINDS = ("dense", "conv2d")  # connection kinds whose missing init means auto(rate = 10 Hz)


def default_init(kind: str) -> InitSpec:
    """The init of a connection whose file gives none: `auto(rate = 10 Hz)` for the feed-forward
    kinds in AUTO_KINDS, the plain default (normal(0, 1/sqrt(fan_in))) for the others."""
    return InitSpec(kind="auto", a=AUTO_RATE) if kind in AUTO_KINDS else InitSpec(kind="default")


@dataclass(frozen=True)
class ConvSpec:
    """Geometry of a `conv2d` / `pool2d` connection (dsl/conv.py checks it, runtime/conv.py runs
    it). Shapes are [C, H, W], flat index c*H*W + y*W + x. conv2d: square kernel shared over
    positions, weights [out C, in C, k, k]; pool2d: kernel = stride = the window, padding 0, one
    shared scalar weight (input neuron (c, y, x) -> pooled neuron (c, y // k, x // k))."""

    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: int
    stride: int
    padding: int = 0


@dataclass(frozen=True)
class ConnectionIR:
    kind: str  # "dense" | "recurrent" | "sparse"
    source: str  # input population or layer name
    port: str  # target input port of the neuron type
    delays: Optional[DelaySpec]
    init: InitSpec
    # sparse only (compiler/sparse_ir.py): k presynaptic partners per target neuron, drawn with the seed
    k: int = 0
    seed: int = 0
    conv: Optional[ConvSpec] = None  # conv2d / pool2d geometry (kind "conv2d" | "pool2d")


@dataclass(frozen=True)
class LayerIR:
    name: str
    size: int
    neuron: str  # NeuronIR name
    params: dict[str, float]  # full parameter set (defaults merged with overrides), ms
    connections: tuple[ConnectionIR, ...]
    # sparse networks: state name -> initial distribution (`{ init v = uniform(0, 1) }`)
    state_init: dict[str, InitSpec] = field(default_factory=dict)
    shape: tuple[int, ...] = ()  # as declared: (N,) or (C, H, W); () means (size,)


@dataclass(frozen=True)
class ReadoutIR:
    layer: str
    kind: str  # "first_spike" | "spike_count" | "li_integral" | "max_potential"
    args: dict[str, float]


@dataclass
class NetworkIR:
    name: str
    inputs: dict[str, int]  # population -> size (ordered)
    layers: list[LayerIR]  # in topological order
    readout: Optional[ReadoutIR]  # None only for sparse networks (compiler/sparse_ir.py)
    # Discrete-time networks (compiler/psn.py): neuron name -> DiscreteNeuronIR, and the time grid.
    # Empty / None for exact event networks, whose neurons are NeuronIRs.
    discrete: dict = field(default_factory=dict)
    time_grid: Optional[object] = None
    shapes: dict = field(default_factory=dict)  # input population -> declared shape (n,) or (C, H, W)
