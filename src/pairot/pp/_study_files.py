"""Preprocessed studies as h5ad files: their file names and the atomic write
(``preprocess_studies(..., out_dir=...)``; the atlas reads them back pair by pair)."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import uuid
from pathlib import Path

from anndata import AnnData


def safe_name(name: str) -> str:
    """A file-name-safe, collision-free stem for study ``name``: its characters outside
    ``[A-Za-z0-9_.-]`` replaced (at most 40 kept), then 8 hex digits of its SHA-1 (so names
    differing only in case or in replaced characters get distinct files)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40]
    return f"{safe}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"


def study_h5ad(out_dir: Path, name: str) -> Path:
    """``out_dir/<safe name>.h5ad``: where ``preprocess_studies`` writes study ``name``."""
    return Path(out_dir) / f"{safe_name(name)}.h5ad"


def check_out_dir(out_dir, overwrite: bool) -> Path:
    """``out_dir`` as an absolute Path: a missing or empty folder, or (``overwrite``) any
    folder; a file or a non-empty folder without ``overwrite`` is refused."""
    if not isinstance(out_dir, (str, os.PathLike)):
        msg = f"out_dir must be a folder path (str or Path) or None, got {type(out_dir).__name__}."
        raise TypeError(msg)
    if not isinstance(overwrite, bool):
        msg = f"overwrite must be True or False, got {overwrite!r}."
        raise TypeError(msg)
    path = Path(out_dir).absolute()
    if path.exists() and not path.is_dir():
        msg = f"out_dir={str(out_dir)!r} exists and is not a folder; give a folder path."
        raise FileExistsError(msg)
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        msg = (
            f"out_dir={str(out_dir)!r} is not empty; give an empty or new folder, or pass "
            "overwrite=True to write the studies' files over those of the same names there "
            "(other files are left alone)."
        )
        raise FileExistsError(msg)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomically(adata: AnnData, path: Path) -> None:
    """Write ``adata`` to ``path`` under a temporary name, then rename: a file at ``path`` is
    always a whole study."""
    tmp = path.parent / f".tmp-{path.stem}-{uuid.uuid4().hex[:8]}.h5ad"
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def spill(value, path: Path) -> None:
    """Park a study's intermediate results (its DE tables, its stored pseudobulk) on disk
    until its output is built; :func:`unspill` reads them back exactly and removes the file."""
    with open(path, "wb") as handle:
        pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)


def unspill(path: Path):
    with open(path, "rb") as handle:
        value = pickle.load(handle)  # noqa: S301 - our own file, written by spill()
    path.unlink()
    return value
