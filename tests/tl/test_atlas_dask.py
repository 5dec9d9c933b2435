"""``AtlasMap.solve`` on a ``dask.distributed`` cluster (two worker processes).

The dask engine gives the local engine's answers (mapping, distance, no-match flags,
harmonized table) on three small studies; its tasks ran on the workers and received file
paths, not AnnData (an in-memory study is written once to ``out_dir/studies``, a backed
study is read from its own file); a run whose tasks fail for some pairs, or that is
interrupted on the client, keeps the finished pairs and the next solve fits only the rest;
bad engine values get one clear error.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import pairot as pr
from pairot.tl._atlas import _dask, _store

distributed = pytest.importorskip("distributed")

KW = {"n_top_genes": 60, "n_samples_auroc": 40, "n_samples_hvg_selection": 300}
GEOM = {"batch_size": 128}


@pytest.fixture(scope="module")
def studies():
    q, r = pr.datasets.simulate_pair(
        n_cells_query=300,
        n_cells_reference=150,
        n_genes=150,
        n_cell_types=3,
        n_samples_query=6,
        random_state=3,
    )
    first = q.obs["sample_id"].astype(str).isin([f"query_donor{i}" for i in (1, 2, 3)]).to_numpy()
    raw = {"A": q[first].copy(), "B": r.copy(), "C": q[~first].copy()}
    # a cluster name that h5ad files and folder names must survive
    labels = raw["C"].obs["cell_type"].astype(str).replace("L1_T1", "L1/T1 ü+")
    raw["C"].obs["cell_type"] = pd.Categorical(labels)
    studies = pr.pp.preprocess_studies(raw, "cell_type", "sample_id", **KW)
    # 140 cells each, so that every pair has one shape: each process compiles the solve once
    rng = np.random.default_rng(0)
    return {
        name: adata[np.sort(rng.choice(adata.n_obs, 140, replace=False))].copy()
        for name, adata in studies.items()
    }


@pytest.fixture(scope="module")
def local(studies):
    return pr.tl.AtlasMap(studies, init_geom=GEOM).solve(progress=False, engine="local")


@pytest.fixture(scope="module")
def client():
    # processes=True: the workers are other processes, so a task can only see what it is sent
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def recording(monkeypatch, client):
    """Record the arguments of every task submitted to ``client``."""
    calls = []
    submit = client.submit

    def record(function, *args, **kwargs):
        calls.append((function, args))
        return submit(function, *args, **kwargs)

    monkeypatch.setattr(client, "submit", record)
    return calls


def assert_same_answers(got, expected, unmatched=True):
    assert got.pairs == expected.pairs
    for a, b in expected.pairs:
        for x, y in ((a, b), (b, a)):
            for method in ("mean", "transported_mass"):
                pd.testing.assert_frame_equal(
                    got.mapping(x, y, method), expected.mapping(x, y, method), check_exact=True
                )
            pd.testing.assert_frame_equal(
                got.distance(x, y), expected.distance(x, y), check_exact=True
            )
            if unmatched:
                pd.testing.assert_frame_equal(
                    got.unmatched(x, y), expected.unmatched(x, y), check_exact=True
                )
    pd.testing.assert_frame_equal(got.harmonize(), expected.harmonize())


def test_dask_engine_equals_the_local_one_and_runs_on_the_workers(
    studies, local, client, tmp_path, monkeypatch
):
    # C is backed: the workers read its own file; A and B are written to out_dir/studies
    path_c = tmp_path / "C.h5ad"
    studies["C"].copy().write_h5ad(path_c)
    backed = {**studies, "C": ad.read_h5ad(path_c, backed="r")}
    assert _store.study_fingerprint(backed["C"]) == _store.study_fingerprint(studies["C"])
    snapshot = {name: studies[name].obs.copy() for name in ("A", "B")}
    calls = recording(monkeypatch, client)
    out = tmp_path / "atlas"
    atlas = pr.tl.AtlasMap(backed, out_dir=out, init_geom=GEOM).solve(progress=False)  # auto
    assert atlas.solve_log == dict.fromkeys(local.pairs, "fitted")
    assert_same_answers(atlas, local)
    # one task per pair, given paths and plain options: never an AnnData or an array
    assert [args[2:4] for _, args in calls] == [tuple(pair) for pair in local.pairs]
    paths = {name: str(_store.study_path(out, name).resolve()) for name in "AB"}
    paths["C"] = str(path_c.resolve())
    for function, (path_a, path_b, a, b, options) in calls:
        assert function is _dask.fit_pair_task
        assert (path_a, path_b) == (paths[a], paths[b])
        assert _plain(options)
    assert sorted(p.name for p in (out / "studies").glob("*.h5ad")) == sorted(
        _store.study_path(out, name).name for name in "AB"
    )
    for name in "AB":  # the file a worker reads is the study: same fingerprint, same fit
        read = ad.read_h5ad(_store.study_path(out, name))
        assert _store.study_fingerprint(read) == _store.study_fingerprint(studies[name])
    # the tasks ran on the worker processes (recorded by the task, and in the task stream)
    workers = set(client.scheduler_info()["workers"])
    assert {atlas._pair(*pair).info["worker"] for pair in local.pairs} <= workers
    for name, obs in snapshot.items():
        pd.testing.assert_frame_equal(studies[name].obs, obs)
    # a second solve loads every pair and submits nothing
    calls.clear()
    again = pr.tl.AtlasMap(backed, out_dir=out, init_geom=GEOM).solve(progress=False)
    assert calls == [] and set(again.solve_log.values()) == {"loaded"}
    assert_same_answers(again, local)
    backed["C"].file.close()


def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def test_resume_after_failed_tasks_and_an_interrupt(studies, local, client, tmp_path, monkeypatch):
    out = tmp_path / "atlas"
    options = {"init_geom": GEOM, "unmatched": False}  # two solves fewer per pair
    # C's study file is broken (with a matching fingerprint, so it is trusted): the tasks of
    # (A, C) and (B, C) fail on their workers, (A, B) finishes and is stored
    fingerprint = _store.study_fingerprint(studies["C"])
    path = _store.study_file(out, "C", studies["C"], fingerprint)
    path.write_bytes(b"not an h5ad file")
    with pytest.raises(RuntimeError, match=r"2 of 3 pair\(s\) failed on the workers \(\(A, C\)"):
        pr.tl.AtlasMap(studies, out_dir=out, **options).solve(progress=False, engine="dask")
    assert (_store.pair_dir(out, "A", "B") / "pair.json").is_file()
    assert not _store.pair_dir(out, "A", "C").exists()
    path.unlink()
    # interrupted on the client after the first pair arrives: pending tasks are cancelled,
    # what finished is stored
    write = _store.write_pair
    written = []

    def interrupted(*args, **kwargs):
        if written:
            raise KeyboardInterrupt
        written.append(write(*args, **kwargs))

    monkeypatch.setattr(_store, "write_pair", interrupted)
    atlas = pr.tl.AtlasMap(studies, out_dir=out, **options)
    with pytest.raises(KeyboardInterrupt):
        atlas.solve(progress=False, engine="dask")
    assert atlas.solve_log[("A", "B")] == "loaded" and len(written) == 1
    monkeypatch.setattr(_store, "write_pair", write)
    calls = recording(monkeypatch, client)
    resumed = pr.tl.AtlasMap(studies, out_dir=out, **options).solve(progress=False)
    fitted = [pair for pair, how in resumed.solve_log.items() if how == "fitted"]
    assert len(fitted) == 1 and [tuple(args[2:4]) for _, args in calls] == fitted
    assert_same_answers(resumed, local, unmatched=False)


def test_bad_engines(studies, client, tmp_path, monkeypatch, caplog):
    atlas = pr.tl.AtlasMap(studies, init_geom=GEOM)
    for bad in ("gpu", None, 3):
        with pytest.raises(ValueError, match=r"engine must be one of \['auto', 'local', 'dask'\]"):
            atlas.solve(progress=False, engine=bad)
    with pytest.raises(ValueError, match="the dask engine needs out_dir"):
        atlas.solve(progress=False, engine="dask")
    # auto with the client active but no out_dir: here, with a warning saying why
    calls = recording(monkeypatch, client)
    with caplog.at_level(logging.WARNING, logger="pairot"):
        atlas.solve([("A", "B")], progress=False)
    assert calls == [] and atlas.solve_log == {("A", "B"): "fitted"}
    assert "the dask engine needs out_dir" in caplog.text
    # the client's devices mean nothing on a worker: refused before any file is written
    pinned = pr.tl.AtlasMap(studies, out_dir=tmp_path, init_geom=GEOM, solve={"devices": ["x"]})
    with pytest.raises(ValueError, match="names devices of this process"):
        pinned.solve(progress=False, engine="dask")
    assert not (tmp_path / "studies").exists()
    monkeypatch.setattr(_dask, "active_client", lambda: None)
    with pytest.raises(ValueError, match="needs an active dask.distributed client"):
        atlas.solve(progress=False, engine="dask")
    monkeypatch.setattr(_dask.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install 'distributed'"):
        atlas.solve(progress=False, engine="dask")
