"""The argument checks of the ``pairot.tl`` boundary (:class:`~pairot.tl.DatasetMap`'s public
methods); the layers below assume valid arguments.

Each check returns the validated value (converted to a plain ``int`` / ``float`` where that is
what the layers take) and raises with a message naming the argument, the bad value and the
fix. The checks of one concept that live with it stay there and are reused from here:
``_cost._small_clusters.check_arguments`` (run once the studies are read, as before) and
``_cost._robust_label_distance.check_mode``.
"""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd


class StageError(ValueError, RuntimeError):
    """A ``DatasetMap`` step was called before the step it needs (e.g. ``solve`` before
    ``init_problem``). Subclasses ``ValueError`` and ``RuntimeError``, so either catches it."""


AGGREGATION_METHODS = ("mean", "jensen_shannon", "transported_mass")
MARGINALS = ("balanced", "uniform")
SIDES = ("query", "reference")
#: What ``DatasetMap.bootstrap(resample=...)`` can resample.
RESAMPLE_KINDS = ("cells", "samples")
MATCH_OUTPUTS = ("table", "dict")


#: Number types a numeric argument may have (``bool`` is excluded by :func:`_is`).
NUMBER = (int, float, np.integer, np.floating)
#: Integer types an integer argument may have.
INTEGER = (int, np.integer)


def _is(value, kinds) -> bool:
    """Whether ``value`` is an instance of ``kinds`` and no ``bool`` (a bool is an int)."""
    return not isinstance(value, bool | np.bool_) and isinstance(value, kinds)


def own_arguments(method) -> list[str]:
    """The named parameters of a ``DatasetMap`` method, for messages."""
    return [
        name
        for name, parameter in inspect.signature(method).parameters.items()
        if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
    ]


def check_positive(value, argument: str, *, integer: bool = False):
    what = "a positive integer" if integer else "a positive number"
    if not _is(value, INTEGER if integer else NUMBER):
        msg = f"{argument} must be {what}, got {value!r} ({type(value).__name__})."
        raise TypeError(msg)
    if not np.isfinite(value):
        msg = f"{argument} must be a finite number, got {value!r}; pass {what}."
        raise ValueError(msg)
    if value <= 0:
        msg = f"{argument} must be > 0, got {value!r}; pass {what}."
        raise ValueError(msg)
    return int(value) if integer else float(value)


#: ``init_geom``'s default weights; ``label_distance_mode="auto"`` needs them untouched.
DEFAULT_WEIGHTS = (0.5, 1.5)


def check_weights(lambda_feature, lambda_label, mode: str = "pairot") -> tuple[float, float]:
    """``lambda_feature`` and ``lambda_label``: finite and >= 0, and at their defaults with
    the label distance ``mode`` ``"auto"`` (which decides them)."""
    lambda_feature = float(lambda_feature)
    lambda_label = float(lambda_label)
    for value, argument in ((lambda_feature, "lambda_feature"), (lambda_label, "lambda_label")):
        if not np.isfinite(value) or value < 0:
            msg = f"{argument} must be a finite number >= 0, got {value}."
            raise ValueError(msg)
    if mode == "auto" and (lambda_feature, lambda_label) != DEFAULT_WEIGHTS:
        msg = (
            f"label_distance_mode='auto' decides the weights itself, got "
            f"lambda_feature={lambda_feature}, lambda_label={lambda_label}; leave both at "
            "their defaults (0.5, 1.5) with 'auto', or pass label_distance_mode='pairot' "
            "or 'robust' to set them (docs/method.md#automatic-label-distance)."
        )
        raise ValueError(msg)
    return lambda_feature, lambda_label


def check_tau(value, argument: str) -> float:
    if not _is(value, NUMBER):
        msg = f"{argument} must be a number in (0, 1], got {value!r} ({type(value).__name__})."
        raise TypeError(msg)
    if not (0 < value <= 1):  # also catches NaN
        msg = (
            f"{argument} must lie in (0, 1], got {value!r}; 1 enforces the marginal, values "
            "such as 0.95 relax it (unbalanced OT)."
        )
        raise ValueError(msg)
    return float(value)


def check_marginals_distribution(marginals_distribution) -> str:
    if marginals_distribution not in MARGINALS:
        msg = f"marginals_distribution must be one of {MARGINALS}, got {marginals_distribution!r}."
        raise ValueError(msg)
    return marginals_distribution


def check_marginal(values, n: int, argument: str, cells: str) -> np.ndarray:
    """A user-given marginal: ``n`` finite, non-negative weights with a positive sum, rescaled
    to sum to 1."""
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        msg = f"{argument} must be an array of {n} non-negative weights, one per {cells} cell."
        raise TypeError(msg) from error
    if values.shape != (n,):
        msg = (
            f"{argument} must have one weight per {cells} cell, shape ({n},), got "
            f"{values.shape}; pass None for the default marginal."
        )
        raise ValueError(msg)
    bad = ~np.isfinite(values)
    if bad.any():
        msg = (
            f"{argument} has {int(bad.sum())} NaN or infinite weight(s) (first at index "
            f"{int(np.flatnonzero(bad)[0])}); weights must be finite and >= 0."
        )
        raise ValueError(msg)
    if (values < 0).any():
        msg = (
            f"{argument} has {int((values < 0).sum())} negative weight(s) (min "
            f"{values.min()}); weights must be >= 0."
        )
        raise ValueError(msg)
    total = values.sum()
    if total <= 0:
        msg = f"{argument} sums to {total}; give it a positive total mass."
        raise ValueError(msg)
    return values / total


def check_lse_mode(mapped: dict, kernel_memory_budget):
    """``kernel_memory_budget`` after upstream's ``lse_mode`` (translated into ``mapped``)."""
    if "kernel_memory_budget" not in mapped:
        return kernel_memory_budget
    if kernel_memory_budget not in (None, 0):
        msg = (
            f"solve(lse_mode=True, kernel_memory_budget={kernel_memory_budget}) "
            "contradict each other: lse_mode=True means kernel_memory_budget=0 (no "
            "precomputed kernel); pass one of the two."
        )
        raise ValueError(msg)
    return mapped["kernel_memory_budget"]


def check_solve_options(
    *,
    threshold,
    max_iterations,
    inner_iterations,
    kernel_memory_budget,
    cluster_correction,
    block_memory_budget,
    sparse,
    sparse_tolerance,
    kernel_dtype,
    devices,
) -> dict:
    """The options of ``DatasetMap.solve`` as the engine's ``sinkhorn`` takes them (also what
    ``bootstrap`` solves its resamples with); the devices are resolved here, before any work."""
    from ._ot import resolve_devices

    threshold = check_positive(threshold, "threshold")
    max_iterations = check_positive(max_iterations, "max_iterations", integer=True)
    inner_iterations = check_positive(inner_iterations, "inner_iterations", integer=True)
    if not isinstance(cluster_correction, bool | np.bool_):
        msg = f"cluster_correction must be True or False, got {cluster_correction!r}."
        raise TypeError(msg)
    resolve_devices(devices)
    return {
        "threshold": threshold,
        "max_iterations": max_iterations,
        "inner_iterations": inner_iterations,
        "kernel_memory_budget": kernel_memory_budget,
        "cluster_correction": bool(cluster_correction),
        "block_memory_budget": block_memory_budget,
        "sparse": sparse,
        "sparse_tolerance": sparse_tolerance,
        "kernel_dtype": kernel_dtype,
        "devices": devices,
    }


def check_aggregation_method(aggregation_method) -> str | None:
    if aggregation_method is not None and aggregation_method not in AGGREGATION_METHODS:
        msg = (
            f"aggregation_method must be one of {AGGREGATION_METHODS} or None, got "
            f"{aggregation_method!r}."
        )
        raise ValueError(msg)
    return aggregation_method


def check_side(side: str) -> str:
    if side not in SIDES:
        msg = f"side must be 'query' or 'reference', got {side!r}."
        raise ValueError(msg)
    return side


def check_split(split_share, min_cells) -> tuple[float, int]:
    """``split_share`` in (0, 1] and ``min_cells`` >= 0 of ``cell_mapping_summary``."""
    if not _is(split_share, NUMBER):
        msg = f"split_share must be a number in (0, 1], got {split_share!r}."
        raise TypeError(msg)
    if not 0 < split_share <= 1:
        msg = f"split_share must lie in (0, 1], got {split_share!r}; e.g. 0.25."
        raise ValueError(msg)
    if not _is(min_cells, INTEGER):
        msg = f"min_cells must be an integer >= 0, got {min_cells!r}."
        raise TypeError(msg)
    if min_cells < 0:
        msg = f"min_cells must be >= 0, got {min_cells}; e.g. 5."
        raise ValueError(msg)
    return float(split_share), int(min_cells)


def check_unmatched(tau_a, min_retained, max_mapping_ratio) -> tuple[float, float, float]:
    """The arguments of ``unmatched_clusters``: ``tau_a`` in (0, 1), the thresholds > 0."""
    tau_a = check_tau(tau_a, "tau_a")
    if tau_a == 1:
        msg = (
            "tau_a must be below 1 for unmatched_clusters (1 enforces the query marginal, "
            "so no cluster can shed mass); pass e.g. tau_a=0.95 (the calibrated value)."
        )
        raise ValueError(msg)
    min_retained = check_positive(min_retained, "min_retained")
    max_mapping_ratio = check_positive(max_mapping_ratio, "max_mapping_ratio")
    return tau_a, min_retained, max_mapping_ratio


def check_matches(
    mapping, distance, threshold_mapping, threshold_distance, n_top, output, unmatched, intervals
) -> tuple[float | None, float | None, int | None]:
    """The arguments of ``select_similar_clusters``; returns the thresholds (``None`` for
    none) and ``n_top``. ``unmatched`` and ``intervals`` are checked where they are read."""
    if output not in MATCH_OUTPUTS:
        msg = (
            f"output must be 'dict' (the default: {{query: [reference clusters]}}) or "
            f"'table' (the long table with scores and ranks), got {output!r}."
        )
        raise ValueError(msg)
    if output == "dict":
        for argument, value in (("unmatched", unmatched), ("intervals", intervals)):
            if value is not None:
                msg = (
                    f"{argument}= adds columns to the long table, but output='dict' (the "
                    "default) returns {query: [reference clusters]}, which has no room "
                    f"for them; pass output='table' together with {argument}=."
                )
                raise ValueError(msg)
    if not isinstance(mapping, pd.DataFrame) or not isinstance(distance, pd.DataFrame):
        msg = (
            "mapping and distance must be the DataFrames of compute_mapping/compute_distance, "
            f"got {type(mapping).__name__} and {type(distance).__name__}; for "
            "compute_mapping(aggregation_method=None) pass one entry, e.g. mapping['mean']."
        )
        raise TypeError(msg)
    if list(mapping.index) != list(distance.index) or list(mapping.columns) != list(
        distance.columns
    ):
        msg = "mapping and distance must have the same query rows and reference columns."
        raise ValueError(msg)
    thresholds = []
    for argument, value in (
        ("threshold_mapping", threshold_mapping),
        ("threshold_distance", threshold_distance),
    ):
        if value is None:
            thresholds.append(None)
            continue
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
            msg = f"{argument} must be a number or None (no threshold), got {value!r}."
            raise TypeError(msg)
        if not np.isfinite(value):
            msg = f"{argument} must be finite or None (no threshold), got {value}."
            raise ValueError(msg)
        thresholds.append(float(value))
    if n_top is not None:
        n_top = check_positive(n_top, "n_top", integer=True)
    return thresholds[0], thresholds[1], n_top


def check_bootstrap(n_bootstrap, resample, confidence, random_state, progress):
    """The validated arguments of ``DatasetMap.bootstrap``; errors name the argument."""
    if not _is(n_bootstrap, INTEGER):
        msg = (
            f"n_bootstrap must be an integer >= 2 (the number of resamples), got "
            f"{n_bootstrap!r}; pass e.g. n_bootstrap=20."
        )
        raise TypeError(msg)
    if n_bootstrap < 2:
        msg = (
            f"n_bootstrap must be >= 2 (an interval needs several resamples), got "
            f"{n_bootstrap}; pass e.g. n_bootstrap=20."
        )
        raise ValueError(msg)
    if isinstance(resample, str):
        resample = (resample,)
    try:
        kinds = list(resample)
    except TypeError:
        kinds = None
    if not kinds or not all(isinstance(k, str) for k in kinds):
        msg = (
            f"resample must be 'cells', 'samples' or both, e.g. ('cells', 'samples'), got "
            f"{resample!r}."
        )
        raise TypeError(msg) if kinds is None else ValueError(msg)
    unknown = [k for k in kinds if k not in RESAMPLE_KINDS]
    if unknown:
        msg = (
            f"resample has unknown value(s) {unknown}; choose from {list(RESAMPLE_KINDS)}, "
            "e.g. resample=('cells', 'samples')."
        )
        raise ValueError(msg)
    kinds = tuple(k for k in RESAMPLE_KINDS if k in kinds)
    if not _is(confidence, NUMBER):
        msg = f"confidence must be a number in (0, 1), got {confidence!r}; pass e.g. 0.9."
        raise TypeError(msg)
    if not 0 < confidence < 1:  # also catches NaN
        msg = (
            f"confidence must lie in (0, 1) (the share of resamples inside the interval), got "
            f"{confidence!r}; pass e.g. confidence=0.9."
        )
        raise ValueError(msg)
    if not _is(random_state, INTEGER):
        msg = f"random_state must be an integer seed >= 0, got {random_state!r}."
        raise TypeError(msg)
    if random_state < 0:
        msg = f"random_state must be >= 0, got {random_state}; pass e.g. random_state=0."
        raise ValueError(msg)
    if not isinstance(progress, bool | np.bool_):
        msg = f"progress must be True or False, got {progress!r}."
        raise TypeError(msg)
    return int(n_bootstrap), kinds, float(confidence), int(random_state), bool(progress)


def check_init(init, dm, map_type: type):
    """``DatasetMap.solve``'s ``init``: a start name, or a solved ``map_type`` on a subset of
    ``dm``'s cells, returned as the :class:`~pairot.tl._solve.MapStart` of its potentials."""
    from ._solve import START_NAMES, MapStart

    fix = (
        "pass init='auto' (default), 'zeros', 'cluster', 'multiscale' or a solved DatasetMap "
        "on a subset of these cells"
    )
    if isinstance(init, str):
        if init not in START_NAMES:
            msg = f"init must be one of {START_NAMES} or a solved DatasetMap, got {init!r}; {fix}."
            raise ValueError(msg)
        return init
    if not isinstance(init, map_type):
        msg = f"init must be a string or a DatasetMap, got {type(init).__name__}; {fix}."
        raise TypeError(msg)
    if init is dm:
        msg = (
            "init is this DatasetMap itself; pass a DatasetMap solved on a subset of its cells, "
            "or init='zeros'."
        )
        raise ValueError(msg)
    if init.ot_solution is None:
        msg = (
            "init (a DatasetMap) has no solution yet: call init.solve() first, or pass "
            "init='multiscale'."
        )
        raise ValueError(msg)
    sides = (
        ("adata1", "query", dm.adata1.obs_names, init.adata1.obs_names),
        ("adata2", "reference", dm.adata2.obs_names, init.adata2.obs_names),
    )
    rows = {}
    for name, side, mine, theirs in sides:
        if not mine.is_unique:
            msg = (
                f"init (a DatasetMap) is matched to these cells by obs_names, but this map's "
                f"{name}.obs_names are not unique; call {name}.obs_names_make_unique() before "
                "DatasetMap(...), or pass init='multiscale'."
            )
            raise ValueError(msg)
        found = mine.get_indexer(theirs)
        missing = theirs[found < 0]
        if len(missing):
            msg = (
                f"init (a DatasetMap) must be solved on a subset of this map's cells, but "
                f"{len(missing)} of its {len(theirs)} {side} cells (e.g. {list(missing[:3])}) are "
                f"not in this map's {name}.obs_names; build it from "
                f"{name}[some cells] of the same study, or pass init='multiscale'."
            )
            raise ValueError(msg)
        rows[side] = found
    g = np.asarray(init.ot_solution.g, dtype=np.float64)
    return MapStart(ref_rows=rows["reference"], g=g)
