"""Input populations of sparse networks (docs/sparse.md, "Networks with inputs"): the out-going
CSR of input connections and the checked, sorted input events of one sample.

Input channels are numbered globally over the input populations (SparseModel.in_offsets). A
`sparse(x, k = K, ...)` connection from an input is drawn exactly as one from a layer
(connectivity.build_csr); a `dense(x, init = ...)` one links every channel to every neuron of the
layer, as a CSR whose row ch holds the layer's neurons in order, so its per-synapse weights are
the dense matrix W[ch, i] in row-major order. Random dense weights come from the same
counter-based generator as sparse ones (connectivity.synapse_weights, synapse number
ch * n_tgt + i, the connection's seed).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from spikescan.compiler.ir import ConnectionIR

from .connectivity import SparseCSR, build_csr, synapse_weights


def build_input_csr(conn: ConnectionIR, src_offset: int, n_src: int, tgt_offset: int, n_tgt: int) -> SparseCSR:
    if conn.kind == "sparse":
        return build_csr(conn, src_offset, n_src, tgt_offset, n_tgt)
    if conn.kind != "dense":
        raise ValueError(f"input connections are sparse or dense, not {conn.kind}")
    indptr = np.arange(n_src + 1, dtype=np.int64) * n_tgt
    targets = np.tile(np.arange(tgt_offset, tgt_offset + n_tgt, dtype=np.int32), n_src)
    if conn.init.kind in ("normal", "uniform"):
        weights: Optional[np.ndarray] = synapse_weights(conn, np.arange(n_src * n_tgt, dtype=np.int64))
        w = float("nan")
    elif conn.init.kind == "constant":
        weights, w = None, conn.init.a
    else:
        raise ValueError("dense input connections of sparse networks take constant, normal or uniform weights")
    return SparseCSR(src_offset, n_src, indptr, targets, w, weights, conn.port)


def input_events(model, times, channels, duration_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """One sample's events as (times float64 [M], channels int64 [M]) sorted by time (stable:
    simultaneous events keep their order), restricted to [0, duration_ms]. Padding: a channel < 0
    or a NaN/inf time marks an unused slot. Raises ValueError for channels past the inputs or
    negative times."""
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    ch = np.asarray(channels).reshape(-1)
    if t.shape != ch.shape:
        raise ValueError(f"times and channels differ in shape: {t.shape} vs {ch.shape}")
    if ch.size and not np.issubdtype(ch.dtype, np.integer):
        if not np.all(np.isnan(ch.astype(np.float64)) | (ch == np.round(ch))):
            raise ValueError("input channels must be integers")
    ch = np.nan_to_num(np.asarray(ch, dtype=np.float64), nan=-1.0).astype(np.int64)
    keep = (ch >= 0) & np.isfinite(t)
    t, ch = t[keep], ch[keep]
    if ch.size and int(ch.max()) >= model.n_in:
        raise ValueError(f"input channel {int(ch.max())} out of range: network {model.name!r} has "
                         f"{model.n_in} input channels")
    if t.size and float(t.min()) < 0:
        raise ValueError(f"input event at t = {float(t.min())} ms < 0")
    keep = t <= duration_ms
    t, ch = t[keep], ch[keep]
    order = np.argsort(t, kind="stable")
    return t[order], ch[order]


def input_rows(model, ch: int):
    """(csr index, a, b) of the CSR rows that input channel ch delivers to."""
    for ci, c in enumerate(model.in_csr):
        local = ch - c.src_offset
        if 0 <= local < c.n_src:
            yield ci, int(c.indptr[local]), int(c.indptr[local + 1])
