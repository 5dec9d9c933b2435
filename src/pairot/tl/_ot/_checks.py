"""Argument checks of the OT engine's entry points, and the numeric settings they resolve.

:func:`~pairot.tl._ot.sinkhorn` and :func:`~pairot.tl._ot.aggregate` validate their arguments
with these helpers (every error names the argument, the bad value and the fix); the kernels
behind them assume valid input. Also here: the matrix-product precisions by name, the float64
context and the one-hot matrix of cluster codes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_PRECISIONS = {
    "highest": lax.Precision.HIGHEST,
    "high": lax.Precision.HIGH,
    "default": lax.Precision.DEFAULT,
}
_PRESETS = getattr(lax, "DotAlgorithmPreset", None)
if _PRESETS is not None and hasattr(_PRESETS, "BF16_BF16_F32_X3"):
    # float32 products from three bfloat16 products (tensor cores), float32 accumulation
    _PRECISIONS["bf16_3x"] = _PRESETS.BF16_BF16_F32_X3


@contextmanager
def _dtype_context(dtype: np.dtype) -> Iterator[None]:
    """Enable 64-bit JAX types for the duration of a float64 computation only."""
    if dtype != np.float64:
        yield
        return
    enable_x64 = getattr(jax, "enable_x64", None)
    if enable_x64 is not None:  # jax >= 0.6: public context manager / config state
        with enable_x64(True):
            yield
        return
    from jax.experimental import enable_x64 as experimental_enable_x64  # pragma: no cover

    with experimental_enable_x64():  # pragma: no cover
        yield


def _check_dtype(dtype) -> np.dtype:
    try:
        out = np.dtype(dtype)
    except TypeError:
        out = None
    if out not in (np.dtype(np.float32), np.dtype(np.float64)):
        msg = f"dtype must be numpy.float32 or numpy.float64, got {dtype!r}; pass dtype=np.float32."
        raise ValueError(msg)
    return out


def _check_points(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        msg = (
            f"{name} must be a non-empty 2-D array (cells x features), got shape {arr.shape}; "
            "pass one augmented feature vector per row."
        )
        raise ValueError(msg)
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        msg = f"{name} must contain finite numbers only; remove or impute NaN/inf values."
        raise ValueError(msg)
    return arr


def _check_scalar(
    value,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = True,
    hint: str = "",
) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    ok = math.isfinite(out)
    if ok and low is not None:
        ok = out > low if low_open else out >= low
    if ok and high is not None:
        ok = out <= high
    if not ok:
        lo = "" if low is None else ("> " if low_open else ">= ") + f"{low}"
        hi = "" if high is None else f"<= {high}"
        rng = " and ".join(s for s in (lo, hi) if s) or "finite"
        msg = f"{name} must be a finite number {rng}, got {value!r}{hint}."
        raise ValueError(msg)
    return out


def _check_int(value, name: str, *, low: int = 1, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        msg = f"{name} must be an integer >= {low}, got {value!r}{hint}."
        raise ValueError(msg)
    return int(value)


def _check_vector(v, length: int, name: str, what: str) -> np.ndarray:
    arr = np.asarray(v)
    if arr.shape != (length,):
        msg = f"{name} must have shape ({length},) (one value per {what}), got shape {arr.shape}."
        raise ValueError(msg)
    if not np.issubdtype(arr.dtype, np.number):
        msg = f"{name} must be numeric, got dtype {arr.dtype}."
        raise ValueError(msg)
    return arr


def _check_marginal(v, length: int, name: str, what: str) -> np.ndarray:
    arr = _check_vector(v, length, name, what).astype(np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or arr.sum() <= 0:
        msg = (
            f"{name} must be finite and non-negative with a positive sum, got min {arr.min()!r} "
            f"and sum {arr.sum()!r}; pass a probability vector over the {what}s."
        )
        raise ValueError(msg)
    return arr


def _check_codes(codes, length: int, n_clusters: int | None, name: str, what: str) -> np.ndarray:
    """Integer cluster codes in ``[0, n_clusters)`` (``[0, length)`` if ``n_clusters`` is None)."""
    arr = _check_vector(codes, length, name, what)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            msg = f"{name} must hold integer cluster codes, got dtype {arr.dtype}."
            raise ValueError(msg)
    arr = arr.astype(np.int64)
    bound = length if n_clusters is None else n_clusters
    if arr.size and (arr.min() < 0 or arr.max() >= bound):
        fix = (
            "number the clusters 0, 1, ... (at most one code per cell)"
            if n_clusters is None
            else "pass codes 0..n_clusters-1 or raise n_clusters"
        )
        given = "" if n_clusters is None else " (the number of clusters given)"
        msg = (
            f"{name} must lie in [0, {bound}){given}, got values in "
            f"[{arr.min()}, {arr.max()}]; {fix}."
        )
        raise ValueError(msg)
    return arr


def _check_common(x_aug, y_aug, offset, epsilon, batch_size, dtype, precision):
    x = _check_points(x_aug, "x_aug")
    y = _check_points(y_aug, "y_aug")
    if x.shape[1] != y.shape[1]:
        msg = (
            f"x_aug and y_aug must have the same number of columns, got {x.shape[1]} and "
            f"{y.shape[1]}; build both augmented vectors from the same features and labels."
        )
        raise ValueError(msg)
    offset = _check_scalar(offset, "offset")
    epsilon = _check_scalar(epsilon, "epsilon", low=0.0, hint="; pass e.g. epsilon=0.05")
    batch_size = _check_int(batch_size, "batch_size", hint="; pass e.g. batch_size=1024")
    dtype = _check_dtype(dtype)
    if precision not in _PRECISIONS:
        msg = f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}."
        raise ValueError(msg)
    if precision == "bf16_3x" and dtype != np.float32:
        msg = "precision='bf16_3x' needs dtype=np.float32; pass precision='highest' for float64."
        raise ValueError(msg)
    return x, y, offset, epsilon, batch_size, dtype, _PRECISIONS[precision]


def _onehot(codes: np.ndarray, n_clusters: int, dtype) -> jax.Array:
    """``(len(codes), n_clusters)`` one-hot matrix of the cluster codes, on the device."""
    out = np.zeros((len(codes), n_clusters), dtype=dtype)
    out[np.arange(len(codes)), codes] = 1.0
    return jnp.asarray(out)


def _check_init(init, n: int, m: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``None`` or start potentials ``(f0, g0)`` of shapes ``(n,)`` and ``(m,)``: no NaN, no
    ``+inf`` (``-inf`` is allowed, for cells without mass)."""
    if init is None:
        return None
    if not isinstance(init, tuple | list) or len(init) != 2:
        msg = (
            f"init must be None or a pair (f0, g0) of start potentials, got "
            f"{type(init).__name__}; pass init=None for f = g = 0."
        )
        raise TypeError(msg)
    out = []
    for value, length, name, what in (
        (init[0], n, "init[0]", "query cell"),
        (init[1], m, "init[1]", "reference cell"),
    ):
        arr = _check_vector(value, length, name, what).astype(np.float64)
        if np.isnan(arr).any() or (arr == np.inf).any():
            msg = (
                f"{name} (a start potential) must hold no NaN or +inf, got "
                f"{int(np.isnan(arr).sum())} NaN and {int((arr == np.inf).sum())} +inf; pass "
                "the f / g of a finished solve, or init=None."
            )
            raise ValueError(msg)
        out.append(arr)
    return out[0], out[1]
