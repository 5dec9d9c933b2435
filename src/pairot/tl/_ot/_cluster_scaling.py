"""Cluster-level correction of Sinkhorn potentials (a two-level Sinkhorn step).

Annotation-informed costs make the Gibbs kernel nearly block-structured: cells of clusters
whose label distance is 1 are linked by kernel entries of about ``exp(-lambda_label /
epsilon)`` (``exp(-30)`` at the defaults). When the balanced marginals ask for mass to move
between such blocks, plain Sinkhorn shifts the potentials of whole clusters a little per
iteration and its marginal error decays like ``1 / iterations`` (hundreds of iterations on the
PBMC demo). The slow direction is, to first order, one constant per cluster.

This module solves for those constants exactly. Given the current potentials ``(f, g)`` and
the plan mass of every cluster pair ``M[k, c] = sum_{i in k, j in c} P_ij``, shifting
``f_i += epsilon * x[k_i]`` and ``g_j += epsilon * y[c_j]`` changes the dual objective of the
entropic problem (divided by ``epsilon``) by

    F(x, y) = sum_k A_k phi_a(x_k) + sum_c B_c phi_b(y_c) - sum_{k,c} M[k, c] exp(x_k + y_c)

(up to a constant), with ``phi(x) = x`` for a hard marginal and ``phi(x) = (1 - exp(-lambda
x)) / lambda``, ``lambda = (1 - tau) / tau``, for a relaxed one, where ``A_k = sum_{i in k} a_i
exp(-f_i / rho_a)`` (``B`` likewise). ``F`` is concave; its maximizer makes every cluster's row
and column mass of the shifted plan meet its target, i.e. the gradient of ``F`` is the
cluster-level marginal error. It is found by Newton's method with a backtracking line search
(a few dozen steps at most for ``Kq + Kr`` unknowns). Since the correction is a dual ascent
step, it never moves Sinkhorn away from the optimum, and the fixed point is unchanged: the
same stopping rule applies afterwards.

Pure numpy, float64; no JAX here.
"""

from __future__ import annotations

import numpy as np


def _phi(x: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``phi(x)``, ``phi'(x)`` and ``-phi''(x)`` of the marginal term, elementwise."""
    if lam == 0.0:
        return x, np.ones_like(x), np.zeros_like(x)
    e = np.exp(-lam * x)
    return (1.0 - e) / lam, e, lam * e


#: Trust region of a Newton step: largest change of any shift (in units of epsilon, i.e. a
#: factor ``exp(radius)`` on a cluster's mass), at first and at most.
_INITIAL_RADIUS = 4.0
_MAX_RADIUS = 64.0


class _Reflector:
    """Householder reflection ``R = I - beta v v^T`` mapping the unit vector ``u`` to a multiple
    of ``e_1``: coordinates ``1..N-1`` after ``R`` span the complement of ``u``. Applied in
    ``O(N^2)`` (rank-two updates), never formed."""

    def __init__(self, u: np.ndarray):
        self.v = u.copy()
        self.v[0] += 1.0 if u[0] >= 0 else -1.0
        self.beta = 2.0 / (self.v @ self.v)

    def vector(self, x: np.ndarray) -> np.ndarray:
        return x - self.beta * (self.v @ x) * self.v

    def matrix(self, H: np.ndarray) -> np.ndarray:
        """``R H R`` for a symmetric ``H``."""
        v, beta = self.v, self.beta
        Hv = H @ v
        return H - beta * (np.outer(v, Hv) + np.outer(Hv, v)) + beta**2 * (v @ Hv) * np.outer(v, v)


def _trust_region_step(H: np.ndarray, grad: np.ndarray, radius: float, gauge) -> np.ndarray:
    """Levenberg-Marquardt step ``(H + mu I)^-1 grad`` with the smallest ``mu >= 0`` whose step
    stays within ``radius`` in the max norm.

    ``H`` (positive semi-definite) is diagonalized once. Near-null directions (clusters linked
    only by tiny masses: the directions along which mass must move between them) keep their
    share of the gradient instead of being cut off as a least-squares solve would. With
    ``gauge``, the exact null direction of the balanced problem, the step is solved in the
    complement of that direction (along it, ``F`` does not change).
    """
    reflector = None
    if gauge is not None:
        reflector = _Reflector(gauge)
        H = reflector.matrix(H)[1:, 1:]
        grad = reflector.vector(grad)[1:]
    lam, V = np.linalg.eigh(H)
    lam = np.maximum(lam, 0.0)
    coef = V.T @ grad

    def step(mu: float) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            c = np.where(coef == 0.0, 0.0, coef / (lam + mu))
            out = V @ c
            if reflector is None:
                return out
            return reflector.vector(np.concatenate([[0.0], out]))

    out = step(0.0)
    if np.all(np.isfinite(out)) and np.max(np.abs(out)) <= radius:
        return out
    # bisection on log(mu): the step's norm decreases as mu grows
    lo, hi = 1e-300, max(float(lam.max()), 1e-300) + np.max(np.abs(grad)) / radius * 10
    for _ in range(200):
        mid = np.sqrt(lo * hi)
        if np.max(np.abs(step(mid))) > radius:
            lo = mid
        else:
            hi = mid
        if hi <= lo * (1 + 1e-6):
            break
    return step(hi)


def cluster_scaling(
    log_mass: np.ndarray,
    log_a: np.ndarray,
    log_b: np.ndarray,
    *,
    tau_a: float = 1.0,
    tau_b: float = 1.0,
    tol: float = 1e-6,
    max_steps: int = 100,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per-cluster potential shifts that make the cluster marginals of the plan exact.

    Parameters
    ----------
    log_mass
        ``log M[k, c]``, the log plan mass of every (query cluster, reference cluster) pair,
        shape ``(Kq, Kr)``; ``-inf`` where the plan carries no (representable) mass.
    log_a, log_b
        Log target mass per query / reference cluster (``log A_k``, ``log B_c`` above);
        ``-inf`` for a cluster without mass.
    tau_a, tau_b
        Marginal relaxations in ``(0, 1]`` (1: hard constraint).
    tol
        Stop when the L1 norm of the gradient (the cluster-level marginal error, in mass
        units) is below this.
    max_steps
        Maximum number of Newton steps.

    Returns
    -------
    x, y
        Shifts in units of epsilon (``f_i += epsilon x[k_i]``, ``g_j += epsilon y[c_j]``),
        shapes ``(Kq,)`` and ``(Kr,)``; zero for clusters without mass on either side.
    converged
        Whether the gradient fell below ``tol``. When the problem has no solution (a cluster
        with target mass but no plan mass, or values that are not finite) the shifts are all
        zero and ``converged`` is False. Unconverged shifts still increase ``F``.
    """
    log_mass = np.asarray(log_mass, dtype=np.float64)
    log_a = np.asarray(log_a, dtype=np.float64)
    log_b = np.asarray(log_b, dtype=np.float64)
    kq, kr = log_mass.shape
    x_out, y_out = np.zeros(kq), np.zeros(kr)
    if np.any(np.isnan(log_mass)) or np.any(np.isnan(log_a)) or np.any(np.isnan(log_b)):
        return x_out, y_out, False
    rows = np.isfinite(log_a) & np.any(np.isfinite(log_mass), axis=1)
    cols = np.isfinite(log_b) & np.any(np.isfinite(log_mass), axis=0)
    # a cluster that must send (or receive) mass but has no plan mass cannot be corrected
    if np.any(np.isfinite(log_a) & ~rows) or np.any(np.isfinite(log_b) & ~cols):
        return x_out, y_out, False
    if not rows.any() or not cols.any():
        return x_out, y_out, False
    lm = log_mass[np.ix_(rows, cols)]
    # scale masses so that the largest entry is about 1 (F is linear in a common factor)
    shift = max(np.max(lm), np.max(log_a[rows]), np.max(log_b[cols]))
    lm = lm - shift
    A = np.exp(log_a[rows] - shift)
    B = np.exp(log_b[cols] - shift)
    lam_a = (1.0 - tau_a) / tau_a
    lam_b = (1.0 - tau_b) / tau_b
    tol = tol * np.exp(-shift)
    nq = lm.shape[0]

    def evaluate(z):
        x, y = z[:nq], z[nq:]
        # a too long trial step overflows; its value is then not finite and it is rejected
        with np.errstate(over="ignore", invalid="ignore"):
            T = np.exp(lm + x[:, None] + y[None, :])
            pa, da, ha = _phi(x, lam_a)
            pb, db, hb = _phi(y, lam_b)
            value = A @ pa + B @ pb - T.sum()
            grad = np.concatenate([A * da - T.sum(axis=1), B * db - T.sum(axis=0)])
        return value, grad, T, A * ha, B * hb

    # the exact null direction of F when both marginals are hard: (x + t, y - t)
    gauge = None
    if lam_a == 0.0 and lam_b == 0.0:
        gauge = np.concatenate([np.ones(nq), -np.ones(lm.shape[1])])
        gauge /= np.linalg.norm(gauge)
    z = np.zeros(lm.shape[0] + lm.shape[1])
    value, grad, T, ha, hb = evaluate(z)
    radius = _INITIAL_RADIUS
    converged = bool(np.sum(np.abs(grad)) <= tol)
    for _ in range(max_steps):
        if converged or not np.isfinite(value):
            break
        H = np.block([[np.diag(ha + T.sum(axis=1)), T], [T.T, np.diag(hb + T.sum(axis=0))]])
        step = _trust_region_step(H, grad, radius, gauge)
        slope = grad @ step
        if not np.isfinite(slope) or slope <= 0:
            break
        new = evaluate(z + step)
        # Armijo's test; near the optimum F stops changing in float64, and a step that keeps F
        # within rounding of its value and reduces the gradient is taken as well
        gain = new[0] - value
        if np.isfinite(new[0]) and (
            gain >= 1e-4 * slope
            or (gain >= -1e-14 * abs(value) and np.sum(np.abs(new[1])) < np.sum(np.abs(grad)))
        ):
            z = z + step
            value, grad, T, ha, hb = new
            converged = bool(np.sum(np.abs(grad)) <= tol)
            if np.max(np.abs(step)) >= 0.99 * radius:
                radius = min(2.0 * radius, _MAX_RADIUS)
        else:
            radius *= 0.25
            if radius < 1e-12:
                break
    if not np.all(np.isfinite(z)):
        return x_out, y_out, False
    x_out[rows] = z[:nq]
    y_out[cols] = z[nq:]
    return x_out, y_out, converged
