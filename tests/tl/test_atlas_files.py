"""``AtlasMap`` on studies given as h5ad files (``preprocess_studies(..., out_dir=...)``):
the answers equal those of the same studies in memory, to the last bit; the local engine
holds at most two file studies at once and harmonize() reads none; the fingerprints equal
the in-memory studies' (a stored fit is loaded across the two forms); the dask engine gets
the files' own paths; a missing or foreign file gets a clear error."""

from __future__ import annotations

import gc
import weakref

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import pairot as pr
from pairot.tl._atlas import _dask, _studies

KW = {"n_top_genes": 80, "n_samples_auroc": 60, "n_samples_hvg_selection": 400}
GEOM = {"batch_size": 256}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Three small studies of one program, preprocessed in memory and into files."""
    q, r = pr.datasets.simulate_pair(
        n_cells_query=700, n_cells_reference=400, n_genes=250, n_cell_types=4,
        n_samples_query=6, random_state=5,
    )  # fmt: skip
    first = q.obs["sample_id"].astype(str).isin([f"query_donor{i}" for i in (1, 2, 3)]).to_numpy()
    studies = {"A": q[first].copy(), "B": r.copy(), "C": q[~first].copy()}
    memory = pr.pp.preprocess_studies(studies, "cell_type", "sample_id", **KW)
    folder = tmp_path_factory.mktemp("studies")
    paths = pr.pp.preprocess_studies(studies, "cell_type", "sample_id", out_dir=folder, **KW)
    return memory, paths


def assert_same_answers(x, y):
    assert x.pairs == y.pairs
    for a, b in x.pairs:
        for q, r in ((a, b), (b, a)):
            for method in ("mean", "transported_mass"):
                pd.testing.assert_frame_equal(
                    x.mapping(q, r, method), y.mapping(q, r, method), check_exact=True
                )
            pd.testing.assert_frame_equal(x.distance(q, r), y.distance(q, r), check_exact=True)
            pd.testing.assert_frame_equal(x.unmatched(q, r), y.unmatched(q, r), check_exact=True)
    for what in ("harmonize", "links", "disagreements"):
        pd.testing.assert_frame_equal(getattr(x, what)(), getattr(y, what)(), check_exact=True)


def test_files_equal_memory_with_two_studies_at_most(prepared, tmp_path, monkeypatch):
    memory, paths = prepared
    reads, alive = [], []
    original = _studies.read_study

    def read(name, path):
        gc.collect()
        alive.append(sum(ref() is not None for ref in reads))
        adata = original(name, path)
        reads.append(weakref.ref(adata))
        return adata

    monkeypatch.setattr(_studies, "read_study", read)
    in_memory = pr.tl.AtlasMap(memory, init_geom=GEOM, out_dir=tmp_path / "fits")
    in_memory.solve(progress=False)
    from_files = pr.tl.AtlasMap({k: str(v) for k, v in paths.items()}, init_geom=GEOM)
    assert len(reads) == 3 and max(alive) == 0  # the constructor read each file, one by one
    assert from_files.studies == paths  # absolute paths, no AnnData kept
    del reads[:], alive[:]
    from_files.solve(progress=False)
    # pairs (A,B), (A,C), (B,C): A and B, then C (A kept), then B (C kept)
    assert len(reads) == 4 and max(alive) <= 1  # at most two studies held at once
    del reads[:]
    assert_same_answers(in_memory, from_files)
    assert reads == []  # the answers and harmonize() read no study
    # a mix of both forms has the in-memory studies' fingerprints: every stored pair loads
    mixed = {"A": paths["A"], "B": memory["B"], "C": paths["C"]}
    again = pr.tl.AtlasMap(mixed, init_geom=GEOM, out_dir=tmp_path / "fits").solve(progress=False)
    assert set(again.solve_log.values()) == {"loaded"}
    assert_same_answers(in_memory, again)


def test_the_dask_engine_gets_the_files_own_paths(prepared, tmp_path, monkeypatch):
    memory, paths = prepared
    seen = {}

    class Captured(Exception):
        pass

    def run(client, todo, paths_, options, store, bar):
        seen.update(paths_)
        raise Captured

    monkeypatch.setattr(_dask, "resolve_engine", lambda engine, out_dir: ("dask", None))
    monkeypatch.setattr(_dask, "run", run)
    atlas = pr.tl.AtlasMap({"A": paths["A"], "B": memory["B"]}, out_dir=tmp_path / "out")
    with pytest.raises(Captured):
        atlas.solve(progress=False, engine="dask")
    assert seen["A"] == str(paths["A"])  # unchanged, not copied
    assert seen["B"].startswith(str((tmp_path / "out" / "studies").resolve()))
    assert [p.name for p in (tmp_path / "out" / "studies").glob("*.h5ad")] == [
        f"{pr.pp._study_files.safe_name('B')}.h5ad"
    ]


def test_bad_files(prepared, tmp_path):
    memory, paths = prepared
    with pytest.raises(FileNotFoundError, match=r"studies\['A'\] is the path .*nope.h5ad.*no file"):
        pr.tl.AtlasMap({"A": tmp_path / "nope.h5ad", "B": paths["B"]})
    with pytest.raises(FileNotFoundError, match="which is a folder.*out_dir="):
        pr.tl.AtlasMap({"A": tmp_path, "B": paths["B"]})
    (tmp_path / "text.h5ad").write_text("not hdf5")
    with pytest.raises(ValueError, match=r"studies\['A'\]: the file .*text.h5ad.* cannot be read"):
        pr.tl.AtlasMap({"A": tmp_path / "text.h5ad", "B": paths["B"]})
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(tmp_path / "raw.h5ad")
    with pytest.raises(ValueError, match=r"studies\['A'\] \(the file .*raw.h5ad.*preprocess_"):
        pr.tl.AtlasMap({"A": str(tmp_path / "raw.h5ad"), "B": memory["B"]})
    with pytest.raises(TypeError, match="not an AnnData or the path"):
        pr.tl.AtlasMap({"A": 3, "B": memory["B"]})
