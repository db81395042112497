"""Seeded sparse connectivity as out-going CSR (source -> its targets), never a dense matrix.

Each target neuron i of a `sparse(src, k = K, seed = s)` connection has K presynaptic partners
drawn uniformly, with replacement, from the source population (autapses possible for
`sparse(itself)`). Partner k of target i is a counter-based hash of (seed, connection, i, k)
(splitmix64), so the network is a pure function of the seed, independent of chunking, platform or
thread count, and can be regenerated at any time. The engines need the OUT-going adjacency (a
spike of j touches j's targets), so it is built once as CSR by source: indptr int64 [n_src + 1]
and indices int32 [n_tgt * K] (4 bytes per synapse); weights are one float64 per connection for
`constant(...)` weights and one float64 per synapse (8 more bytes) for `normal`/`uniform` ones.
Within a source's row, targets are in increasing order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from spikescan.compiler.ir import ConnectionIR

_U64 = np.uint64
CHUNK = 1 << 22  # synapses per chunk: bounds the temporary memory of the build (~100 MB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        return z ^ (z >> _U64(31))


def stream_key(seed: int, stream: int) -> np.uint64:
    """A 64-bit key per (seed, stream): stream 0 draws partners, 1 and 2 draw weights."""
    k = splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=_U64))
    return splitmix64(k ^ _U64(stream))[0]


def _hash(key: np.uint64, counter: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return splitmix64(counter.astype(_U64) * _U64(0xD1B54A32D192ED03) ^ key)


def partners(seed: int, k: int, n_src: int, t0: int, t1: int) -> np.ndarray:
    """Sources of targets t0..t1-1 (local indices), [t1 - t0, k] int64."""
    counter = np.arange(t0 * k, t1 * k, dtype=np.int64)
    h = _hash(stream_key(seed, 0), counter)
    # multiply-high: floor(u32 * n / 2^32), uniform up to a bias below n / 2^32
    return ((h >> _U64(32)) * _U64(n_src) >> _U64(32)).astype(np.int64).reshape(t1 - t0, k)


def _uniform01(seed: int, stream: int, counter: np.ndarray) -> np.ndarray:
    return (_hash(stream_key(seed, stream), counter) >> _U64(11)).astype(np.float64) * 2.0**-53


def synapse_weights(conn: ConnectionIR, counter: np.ndarray) -> np.ndarray:
    """Weights of the synapses numbered `counter` (target * k + slot) of a random-weight connection."""
    init = conn.init
    u1 = _uniform01(conn.seed, 1, counter)
    if init.kind == "uniform":
        return init.a + (init.b - init.a) * u1
    if init.kind == "normal":
        u2 = _uniform01(conn.seed, 2, counter)
        return init.a + init.b * np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
    raise ValueError(f"no per-synapse weights for init kind {init.kind!r}")


@dataclass
class SparseCSR:
    """Out-going adjacency of one connection; `targets` are global neuron indices."""

    src_offset: int  # global index of the source population's first neuron
    n_src: int
    indptr: np.ndarray  # int64 [n_src + 1]
    targets: np.ndarray  # int32 [n_synapses], global target indices
    weight: float  # the weight of every synapse (constant init), else nan
    weights: Optional[np.ndarray]  # float64 [n_synapses] for random weights, else None
    port: str

    @property
    def n_synapses(self) -> int:
        return int(self.targets.shape[0])

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.targets.nbytes + (0 if self.weights is None else self.weights.nbytes)


def build_csr(conn: ConnectionIR, src_offset: int, n_src: int, tgt_offset: int, n_tgt: int) -> SparseCSR:
    """Build the out-going CSR in two chunked passes (count per source, then fill)."""
    k = conn.k
    if not 1 <= k <= n_src:
        raise ValueError(f"k = {k} must be in [1, {n_src}]")
    rows = max(1, CHUNK // k)
    counts = np.zeros(n_src, dtype=np.int64)
    for t0 in range(0, n_tgt, rows):
        t1 = min(n_tgt, t0 + rows)
        counts += np.bincount(partners(conn.seed, k, n_src, t0, t1).ravel(), minlength=n_src)
    indptr = np.zeros(n_src + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    targets = np.empty(int(indptr[-1]), dtype=np.int32)
    random_w = conn.init.kind in ("normal", "uniform")
    weights = np.empty(targets.shape[0], dtype=np.float64) if random_w else None
    cursor = indptr[:-1].copy()
    for t0 in range(0, n_tgt, rows):
        t1 = min(n_tgt, t0 + rows)
        src = partners(conn.seed, k, n_src, t0, t1).ravel()
        order = np.argsort(src, kind="stable")  # stable: targets stay increasing within a source
        s = src[order]
        uniq, first, cnt = np.unique(s, return_index=True, return_counts=True)
        rank = np.arange(s.shape[0]) - np.repeat(first, cnt)
        pos = cursor[s] + rank
        targets[pos] = (order // k + t0 + tgt_offset).astype(np.int32)
        if random_w:
            weights[pos] = synapse_weights(conn, order + t0 * k)
        cursor[uniq] += cnt
    if conn.init.kind == "default":
        raise ValueError("sparse connections take constant, normal or uniform weights")
    w = conn.init.a if conn.init.kind == "constant" else float("nan")
    return SparseCSR(src_offset, n_src, indptr, targets, w, weights, conn.port)
