"""The transport problem of ``DatasetMap.init_problem``: the marginals and how strictly each is
enforced (docs/method.md#the-optimal-transport-problem)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, repr=False)
class OTProblem:
    """The transport problem set by :meth:`DatasetMap.init_problem` (``dataset_map.ot_prob``).

    Attributes
    ----------
    a, b
        Query and reference marginals (cell weights), each summing to 1.
    tau_a, tau_b
        How strictly each marginal is enforced: 1 enforces it, smaller values relax it
        (OTT-JAX's convention ``tau = rho / (rho + epsilon)``).
    marginals_distribution
        ``"balanced"``, ``"uniform"``, or ``"given"`` when ``a`` and ``b`` were passed.
    epsilon
        The entropic regularization of the geometry.
    """

    a: np.ndarray
    b: np.ndarray
    tau_a: float
    tau_b: float
    marginals_distribution: str
    epsilon: float

    @property
    def shape(self) -> tuple[int, int]:
        return (self.a.size, self.b.size)

    def __repr__(self) -> str:
        n, m = self.shape
        return (
            f"OTProblem({n:,} x {m:,} cells, marginals={self.marginals_distribution!r}, "
            f"tau_a={self.tau_a:g}, tau_b={self.tau_b:g}, epsilon={self.epsilon:g})"
        )


def balanced(codes: np.ndarray) -> np.ndarray:
    counts = np.bincount(codes)
    present = np.count_nonzero(counts)
    return 1.0 / (counts[codes] * present)


def build_problem(
    geom,
    *,
    tau_a: float,
    tau_b: float,
    marginals_distribution: str,
    a: np.ndarray | None,
    b: np.ndarray | None,
) -> OTProblem:
    """The problem on ``geom``'s cells: ``a`` / ``b`` as given (checked and rescaled), else
    the ``marginals_distribution``'s marginal."""
    n, m = geom.x.shape[0], geom.y.shape[0]
    both_given = a is not None and b is not None
    if a is None:
        a = (
            balanced(geom.query_codes)
            if marginals_distribution == "balanced"
            else (np.full(n, 1.0 / n))
        )
    if b is None:
        b = (
            balanced(geom.ref_codes)
            if marginals_distribution == "balanced"
            else (np.full(m, 1.0 / m))
        )
    return OTProblem(
        a=a,
        b=b,
        tau_a=tau_a,
        tau_b=tau_b,
        marginals_distribution="given" if both_given else marginals_distribution,
        epsilon=geom.epsilon,
    )
