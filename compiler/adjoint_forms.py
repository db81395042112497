"""The parameter derivatives every adjoint (backward) backend needs, derived once from the
NeuronIR (compiled CPU: backends/mlir/adjoint.py and mlir/recurrent.py; Triton:
backends/triton/adjoint.py), and the step kinds of their tapes."""

from __future__ import annotations

from typing import Optional

import sympy

from spikescan.compiler.ir import NeuronIR

# what one tape row of a replayed lane was (a propagation to the next arrival + its jump, or a
# spike: solved crossing, at the end of a refractory period, or at the interval start)
PROP, SPIKE, SPIKE_REF, SPIKE_NOW = 0, 1, 2, 3


class AdjointForms:
    """Parameter derivatives of the IR's maps as sympy expressions in the symbols adjX*/adjL*
    (a state and an adjoint vector), D and the parameters: each is d/dp of L^T (map of X)."""

    def __init__(self, nir: NeuronIR, port: Optional[str], with_params: bool = True):
        d = nir.d
        self.X = sympy.Matrix(sympy.symbols(f"adjX0:{d}", real=True))
        self.L = sympy.Matrix(sympy.symbols(f"adjL0:{d}", real=True))
        ps = [p.symbol for p in nir.params]
        X, L = self.X, self.L
        if isinstance(port, tuple):  # several ports per layer: the jump's forms per port
            Bk = None
        else:
            port = port or next(iter(nir.ports))
            Bk = nir.ports[port]

        def grads(expr):
            return [sympy.diff(expr, p) for p in ps]

        self.prop = grads((L.T * (nir.Phi * X + nir.phi))[0, 0])
        self.reset = grads((L.T * (nir.R * X + nir.r))[0, 0])
        if Bk is None:  # {port: forms}; the emitters select the event's port (NeuronEmitter.port_select)
            self.jump = {p: grads((L.T * nir.ports[p])[0, 0]) for p in port}
        else:
            self.jump = grads((L.T * Bk)[0, 0])  # times w
        self.init = grads((L.T * nir.init)[0, 0])
        self.tref = grads(sympy.sympify(nir.t_ref))
        u = (nir.c.T * (nir.Phi * X + nir.phi))[0, 0] - nir.theta
        self.u = grads(u)  # du/dp - dtheta/dp at the spike (X = interval-start state)
        if not with_params:  # exact zeros: the printer emits nothing for them
            for k in ("prop", "reset", "jump", "init", "tref", "u"):
                zeros = [sympy.Integer(0)] * len(ps)
                setattr(self, k, {p: zeros for p in port} if isinstance(getattr(self, k), dict) else zeros)
