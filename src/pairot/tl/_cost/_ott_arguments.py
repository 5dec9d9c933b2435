"""Upstream pairOT's extra keyword arguments of ``init_geom`` / ``init_problem`` / ``solve``.

Upstream forwarded them to OTT-JAX (``PointCloud``, ``LinearProblem``, ``Sinkhorn``). pairot
has its own engine: the arguments with a meaning here are translated into pairot's own, the
ones without effect on the result are accepted at their harmless values, and every other one
is a ``TypeError`` naming it and saying that pairot does not use OTT-JAX.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..._logging import logger

_NO_OTT = "pairot has its own Sinkhorn engine and does not use OTT-JAX"


def _harmless(*allowed) -> Callable:
    """An argument accepted only at values that leave pairot's computation as it is."""

    def handle(method: str, name: str, value, fix: str) -> dict:
        if any(value is v or (not isinstance(value, bool) and value == v) for v in allowed):
            return {}
        shown = ", ".join(repr(v) for v in allowed)
        msg = (
            f"{method}({name}={value!r}) cannot be honoured: {_NO_OTT}, and only {name}="
            f"{shown} matches what it computes. {fix}"
        )
        raise TypeError(msg)

    return handle


def _refused(method: str, name: str, value, fix: str) -> dict:
    msg = f"{method}() got OTT-JAX's argument {name}={value!r}, which {_NO_OTT}. {fix}"
    raise TypeError(msg)


def _lse_mode(method: str, name: str, value, fix: str) -> dict:
    if not isinstance(value, bool | np.bool_):
        msg = f"{method}(lse_mode=...) must be True or False, got {value!r}."
        raise TypeError(msg)
    if value:
        logger.info(
            "solve(lse_mode=True): log-domain updates only (kernel_memory_budget=0); the "
            "result is the same as with the precomputed kernel, to float round-off."
        )
        return {"kernel_memory_budget": 0}
    return {}


def _cost_fn(method: str, name: str, value, fix: str) -> dict:
    msg = (
        f"{method}() got OTT-JAX's argument cost_fn={value!r}, which {_NO_OTT}: the cost is the "
        "method's Spearman-correlation distance plus the label distance. For the cosine "
        "distance of an embedding, pass embedding_layer='X_pca' (an obsm key of both studies)."
    )
    raise TypeError(msg)


# name -> (handler, what to do instead)
_ARGUMENTS: dict[str, dict[str, tuple[Callable, str]]] = {
    "init_geom": {
        "relative_epsilon": (
            _harmless(None, False),
            "pairot's epsilon is absolute, in cost units (the cost lies in [0, 2]); pass "
            "epsilon=0.05 (the method's default) or another absolute value.",
        ),
        "scale_cost": (
            _harmless(1, 1.0),
            "pairot does not rescale the cost (it lies in [0, 2]); to change the balance of "
            "entropy and cost, change epsilon.",
        ),
        "cost_fn": (_cost_fn, ""),
        "src_mask": (_refused, "Subset the AnnData instead, e.g. adata[mask]."),
        "tgt_mask": (_refused, "Subset the AnnData instead, e.g. adata[mask]."),
    },
    "init_problem": {},
    "solve": {
        "lse_mode": (_lse_mode, ""),
        "norm_error": (
            _harmless(1),
            "pairot measures the marginal error as the L1 norm (norm_error=1).",
        ),
        "min_iterations": (
            _harmless(0, None),
            "pairot stops at the first check whose marginal error is below threshold; "
            "lower threshold for a tighter solution.",
        ),
        "recenter_potentials": (
            _harmless(False, True),
            "",
        ),
        "use_danskin": (_harmless(None, False, True), ""),
        "implicit_diff": (
            _harmless(None),
            "pairot does not differentiate through the solve.",
        ),
        "progress_fn": (
            _refused,
            "pairot shows a tqdm progress bar: pass progress=True (default) or progress=False.",
        ),
        "initializer": (
            _refused,
            "pairot starts from its own cluster-level potentials (see cluster_correction).",
        ),
        "momentum": (_refused, "pairot's updates have no momentum option."),
        "anderson": (_refused, "pairot's updates have no Anderson acceleration option."),
        "parallel_dual_updates": (_refused, "pairot alternates the two updates."),
        "kwargs_init": (_refused, "pairot starts from its own cluster-level potentials."),
    },
}


def translate(method: str, kwargs: dict, accepted: list[str]) -> dict:
    """pairot's keyword arguments for upstream's extra ``kwargs`` of ``method``.

    ``accepted`` lists ``method``'s own arguments, for the message about unknown names.
    """
    known = _ARGUMENTS[method]
    unknown = [name for name in kwargs if name not in known]
    if unknown:
        msg = (
            f"{method}() got unexpected keyword argument(s) {unknown}. Upstream pairOT "
            f"forwarded extra arguments to OTT-JAX; {_NO_OTT}. {method}() takes "
            f"{', '.join(accepted)}."
        )
        raise TypeError(msg)
    out: dict = {}
    for name, value in kwargs.items():
        handler, fix = known[name]
        out.update(handler(method, name, value, fix))
    return out
