"""The dask engine of ``AtlasMap.solve``: each pair still to fit is one task on the workers
of an active ``dask.distributed`` client (docs/method.md#many-studies-atlas).

- The workers read the studies from files, never from pickled arrays: a backed study is
  read from its own file (``adata.filename``), a study given as a path (``AtlasMap({name:
  path})``) from that path, unchanged, and an in-memory one is written once to
  ``out_dir/studies/<slug>.h5ad`` (``_store.study_file``). A task gets two paths, the two
  names and the atlas' options (plain values), reads both files, runs the same
  :func:`~._pair.fit_pair` as the local loop and returns the small :class:`~._pair.PairResult`
  (a few cluster x cluster tables).
- The client writes each pair to ``out_dir`` as soon as it arrives (``as_completed``), so an
  interrupted run keeps every finished pair: on ``KeyboardInterrupt`` the pending tasks are
  cancelled; a task that raises does not stop the others, and ``solve`` raises once all
  have ended, naming the pairs that failed.
- Each worker runs on its own devices (``devices=None`` there: ``jax.devices()`` of the
  worker), never on the client's device layout.

``distributed`` is imported only where a client exists or the caller asks for it
(``engine="dask"``), so pairot does not need it installed.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from concurrent.futures import CancelledError
from pathlib import Path

from ._pair import PairResult, fit_pair

logger = logging.getLogger("pairot")


def active_client():
    """The active ``dask.distributed`` client, or None. Never imports ``distributed``: when
    nothing imported it yet, no client can exist."""
    module = sys.modules.get("distributed")
    if module is None:
        return None
    try:
        return module.default_client()
    except ValueError:  # "No clients found"
        return None


def resolve_engine(engine: str, out_dir: Path | None):
    """``(engine, client)``: ``"local"`` with None, or ``"dask"`` with the client."""
    if engine == "local":
        return "local", None
    client = active_client()
    if engine == "auto":
        if client is None:
            return "local", None
        logger.info("AtlasMap.solve: a dask.distributed client is active; pairs run on it.")
    elif client is None:  # engine == "dask"
        if importlib.util.find_spec("distributed") is None:
            msg = (
                "engine='dask' needs dask.distributed, which is not installed: "
                "pip install 'distributed', or use engine='local'."
            )
            raise ImportError(msg)
        msg = (
            "engine='dask' needs an active dask.distributed client, and none is: start one "
            "first (from distributed import Client; client = Client()), or use engine='local'."
        )
        raise ValueError(msg)
    if out_dir is None and engine == "auto":
        logger.warning(
            "A dask.distributed client is active, but the pairs run here: the dask engine "
            "needs out_dir (its workers read the studies from files there). Pass "
            "AtlasMap(..., out_dir='atlas') to run them on the client."
        )
        return "local", None
    if out_dir is None:
        msg = (
            "the dask engine needs out_dir: its workers read the studies from files and each "
            "finished pair is stored there; pass AtlasMap(..., out_dir='atlas'), or "
            "solve(engine='local')."
        )
        raise ValueError(msg)
    return "dask", client


def task_options(options: dict) -> dict:
    """The atlas' options as a task gets them: the solve on the worker's own devices."""
    solve = dict(options["solve"])
    if solve.get("devices") is not None:
        msg = (
            f"solve={{'devices': {solve['devices']!r}}} names devices of this process; with "
            "the dask engine each worker solves on its own devices (jax.devices() there): "
            "drop 'devices', or use solve(engine='local')."
        )
        raise ValueError(msg)
    solve.pop("devices", None)
    return {**options, "solve": solve}


def fit_pair_task(path_a: str, path_b: str, a: str, b: str, options: dict) -> PairResult:
    """One pair on a worker: read both studies from their h5ad files and fit them."""
    import anndata

    adata_a = anndata.read_h5ad(path_a)
    adata_b = anndata.read_h5ad(path_b)
    result = fit_pair(adata_a, adata_b, a, b, options, progress=False)
    try:
        from distributed import get_worker

        result.info["worker"] = str(get_worker().address)
    except (ImportError, ValueError):  # run outside a worker
        result.info["worker"] = None
    return result


def run(client, todo, paths: dict[str, str], options: dict, store, bar) -> list:
    """Submit every pair of ``todo`` to ``client`` (``options`` as :func:`task_options`
    gives them); ``store(result)`` each one as it arrives.

    Returns the pairs that finished, in the order they did. A ``KeyboardInterrupt``
    (or any error on the client) cancels the pending tasks and is raised once what finished
    is stored; tasks that raise leave the others running, and a ``RuntimeError`` naming the
    failed pairs follows once every task has ended (the first error chained to it).
    """
    from distributed import as_completed

    futures = {}
    done: list[tuple[str, str]] = []
    failed: list[tuple[tuple[str, str], BaseException]] = []
    try:
        for a, b in todo:
            future = client.submit(fit_pair_task, paths[a], paths[b], a, b, options, pure=False)
            futures[future] = (a, b)
        for future in as_completed(futures):
            pair = futures[future]
            if future.status != "finished":  # "error", or "cancelled" / "lost" elsewhere
                error = (
                    future.exception()
                    if future.status == "error"
                    else CancelledError(f"the task of pair {pair} ended {future.status!r}")
                )
                logger.error("Pair (%s, %s) failed on its worker: %r", *pair, error)
                failed.append((pair, error))
            else:
                result = future.result()
                store(result)
                done.append(pair)
                logger.info("Pair (%s, %s): fitted on worker %s.", *pair, result.info.get("worker"))
            bar.update()
    except BaseException:
        pending = [f for f in futures if not f.done()]
        logger.warning(
            "AtlasMap.solve interrupted: %d finished pair(s) stored, %d pending task(s) "
            "cancelled; a new solve() with the same out_dir fits only the pairs not stored.",
            len(done),
            len(pending),
        )
        client.cancel(pending)
        raise
    finally:
        bar.refresh()
    if failed:
        names = "; ".join(f"({a}, {b}): {type(e).__name__}: {e}" for (a, b), e in failed)
        msg = (
            f"{len(failed)} of {len(todo)} pair(s) failed on the workers ({names}); the "
            f"{len(done)} finished pair(s) are stored in out_dir, and a new solve() fits "
            "only the rest."
        )
        raise RuntimeError(msg) from failed[0][1]
    return done
