"""A pair's outputs on disk, the parameters that produced them, and resume.

Layout under ``out_dir``::

    pairs/<slug a>__<slug b>/   one folder per fitted pair (a the query of the fit)
        mapping_mean.parquet              a-clusters x b-clusters
        mapping_transported_mass.parquet  a x b (b -> a "mean" is its transpose)
        distance.parquet                  a x b
        mapping_mean.csv, distance.csv    the same two tables, for a person
        unmatched_a.parquet, unmatched_b.parquet   no-match tables (when computed)
        pair.json                         studies, parameters, fingerprints, fit facts
    studies/<slug>.h5ad   an in-memory study, written once for the dask engine's workers
    studies/<slug>.json   its fingerprint (the file is rewritten when the study changes)

A folder is written under a temporary name in ``pairs/`` and renamed when complete, so an
interrupted run leaves either a whole pair or none (a leftover temporary folder is ignored
and replaced). ``pair.json`` records the parameters (the three option dicts, the no-match
options) and a fingerprint of each study (cells, genes, labels, counts); a later run loads the
pair only when both are equal, and otherwise fits it again, with a log line naming what
changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from ...pp._study_files import safe_name as _slug
from ._pair import PairResult

logger = logging.getLogger("pairot")

FORMAT_VERSION = 1


def pair_dir(out_dir: Path, a: str, b: str) -> Path:
    return Path(out_dir) / "pairs" / f"{_slug(a)}__{_slug(b)}"


def jsonable(value):
    """The options as JSON can hold them (numbers, strings, lists; others by ``repr``)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return repr(value)


def study_fingerprint(adata) -> str:
    """A hash of what a pair's fit reads from a study: cell and gene names, cluster labels,
    the counts and the recorded preprocessing parameters."""
    h = hashlib.sha1()
    info = adata.uns["pairot"]
    for values in (adata.obs_names, adata.var_names, adata.obs[info["cell_type_key"]].astype(str)):
        h.update("\x1f".join(map(str, values)).encode("utf-8"))
        h.update(b"\x1e")
    x = adata.X
    if x is not None and not sparse.issparse(x) and not isinstance(x, np.ndarray):
        # a backed study: its counts as the in-memory study has them, so that a study and
        # its h5ad file have one fingerprint
        x = x.to_memory() if hasattr(x, "to_memory") else x[()]
    if sparse.issparse(x):
        x = x.tocsr()
        for part in (x.data, x.indices, x.indptr):
            h.update(np.ascontiguousarray(part).tobytes())
    elif x is not None:
        h.update(np.ascontiguousarray(np.asarray(x)).tobytes())
    h.update(json.dumps(jsonable(dict(info.get("params", {})))).encode("utf-8"))
    for key in ("de_ova", "de_ava"):
        table = info.get(key)
        if isinstance(table, pd.DataFrame):
            h.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return h.hexdigest()


def study_path(out_dir: Path, name: str) -> Path:
    """Where the dask engine writes an in-memory study ``name``."""
    return Path(out_dir) / "studies" / f"{_slug(name)}.h5ad"


def study_file(out_dir: Path, name: str, adata, fingerprint: str) -> Path:
    """The h5ad file a dask worker reads study ``name`` from.

    A backed study (not a view) is read from its own file; an in-memory one (or a backed
    view) is written to ``out_dir/studies/<slug>.h5ad`` once, with its fingerprint beside
    it, and written again only when the fingerprint differs (atomically: a temporary name,
    then a rename). The caller's AnnData is not changed (a copy is written).
    """
    if getattr(adata, "isbacked", False) and not adata.is_view and adata.filename is not None:
        return Path(adata.filename).resolve()
    path = study_path(out_dir, name).resolve()  # absolute: workers may run elsewhere
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    sidecar = path.with_suffix(".json")
    if path.is_file() and sidecar.is_file():
        try:
            if json.loads(sidecar.read_text(encoding="utf-8")).get("fingerprint") == fingerprint:
                return path
        except (OSError, ValueError):
            pass
    tmp = folder / f".tmp-{path.stem}-{uuid.uuid4().hex[:8]}.h5ad"
    sidecar.unlink(missing_ok=True)  # no stale fingerprint may vouch for the new file
    try:
        # write_h5ad turns string columns into categoricals in place: write a copy
        adata.copy().write_h5ad(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    meta = {"study": name, "fingerprint": fingerprint}
    sidecar.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    logger.info("Study %r written to %s for the dask workers.", name, path)
    return path


_TABLES = ("mapping_mean", "mapping_transported_mass", "distance")


def _write_frame(frame: pd.DataFrame, path: Path) -> None:
    frame.to_parquet(path)


def write_pair(out_dir: Path, result: PairResult, record: dict) -> Path:
    """Write a pair's folder atomically (temporary folder, then rename)."""
    final = pair_dir(out_dir, result.a, result.b)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name in _TABLES:
            _write_frame(getattr(result, name), tmp / f"{name}.parquet")
        result.mapping_mean.to_csv(tmp / "mapping_mean.csv")
        result.distance.to_csv(tmp / "distance.csv")
        for side in ("a", "b"):
            table = getattr(result, f"unmatched_{side}")
            if table is not None:
                table.to_parquet(tmp / f"unmatched_{side}.parquet")
        meta = {
            "format": FORMAT_VERSION,
            "a": result.a,
            "b": result.b,
            **record,
            "info": jsonable(result.info),
        }
        (tmp / "pair.json").write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
        if final.exists():  # an earlier fit with other parameters: replace it
            old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        o, n = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(o, dict) and isinstance(n, dict):
            out += _differences(o, n, f"{prefix}{key}.")
        elif o != n:
            out.append(f"{prefix}{key} {o!r} -> {n!r}")
    return out


def load_pair(out_dir: Path, a: str, b: str, record: dict) -> PairResult | None:
    """The stored pair when its recorded parameters and study fingerprints equal ``record``;
    otherwise None (with an INFO line saying why, when a stored pair exists)."""
    folder = pair_dir(out_dir, a, b)
    meta_path = folder / "pair.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logger.info("Pair (%s, %s): %s is unreadable (%s); fitting again.", a, b, meta_path, error)
        return None
    stored = {key: meta.get(key) for key in record}
    stored["format"], current = meta.get("format"), {**record, "format": FORMAT_VERSION}
    changed = _differences(stored, current)
    if changed:
        logger.info(
            "Pair (%s, %s): the stored fit in %s has other parameters (%s); fitting again.",
            a,
            b,
            folder,
            "; ".join(changed),
        )
        return None
    try:
        tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in _TABLES}
        unm = {
            side: pd.read_parquet(folder / f"unmatched_{side}.parquet")
            if (folder / f"unmatched_{side}.parquet").is_file()
            else None
            for side in ("a", "b")
        }
    except (OSError, ValueError) as error:
        logger.info("Pair (%s, %s): a stored table is unreadable (%s); fitting again.", a, b, error)
        return None
    if record.get("unmatched") is not None and (unm["a"] is None or unm["b"] is None):
        logger.info("Pair (%s, %s): the stored no-match tables are missing; fitting again.", a, b)
        return None
    logger.info("Pair (%s, %s): loaded from %s (not fitted again).", a, b, folder)
    return PairResult(
        a,
        b,
        tables["mapping_mean"],
        tables["mapping_transported_mass"],
        tables["distance"],
        unm["a"],
        unm["b"],
        meta.get("info", {}),
    )
