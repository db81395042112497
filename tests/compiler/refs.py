"""Independent references for the propagator: the matrix exponential of the augmented system
[1; x] -> [[0, 0], [a0, A]] computed by mpmath (arbitrary precision) and scipy."""

from __future__ import annotations

import mpmath
import numpy as np
import scipy.linalg


def augmented(A: np.ndarray, a0: np.ndarray) -> np.ndarray:
    d = A.shape[0]
    M = np.zeros((d + 1, d + 1))
    M[1:, 1:] = A
    M[1:, 0] = a0
    return M


def mp_expm_prop(A, a0, D):
    """(Phi, phi) as mpmath matrices, from mp.expm at a precision that survives the scaling and
    squaring of stiff matrices (digits grow with max |rate| * D)."""
    M = augmented(np.asarray(A, float), np.asarray(a0, float).reshape(-1))
    stiff = float(np.max(np.abs(np.diag(M)))) * float(D)
    dps = 50 + int(stiff / 2.3) + 10
    with mpmath.workdps(dps):
        Mm = mpmath.matrix(M.tolist()) * mpmath.mpf(float(D))
        E = mpmath.expm(Mm)
        d = M.shape[0] - 1
        Phi = [[E[i + 1, j + 1] for j in range(d)] for i in range(d)]
        phi = [E[i + 1, 0] for i in range(d)]
    return Phi, phi


def scipy_prop(A, a0, D):
    E = scipy.linalg.expm(augmented(np.asarray(A, float), np.asarray(a0, float).reshape(-1)) * D)
    return E[1:, 1:], E[1:, 0]
