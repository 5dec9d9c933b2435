"""An atlas' studies in memory or as h5ad files, and the small per-study facts that the
harmonization reads (docs/method.md#many-studies-atlas).

A study given as a path (``str`` or ``Path``, what ``pr.pp.preprocess_studies(...,
out_dir=...)`` returns) is read once when the atlas is made, to check it and to keep its
:class:`StudyFacts` (cluster names, the cluster pairs its all-vs-all DE separates, its genes
and fingerprint; a few kB), then released; a fit reads it again (:func:`read_study`) and
releases it after. So ``harmonize()`` never reads a study, and the local engine holds at most
the two studies of the pair being fitted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from anndata import AnnData

#: How to make a study file, for messages.
HOW = (
    "write the preprocessed studies with pr.pp.preprocess_studies(studies, cell_type_column, "
    "sample_column, out_dir='studies') and pass the dict of paths it returns"
)


def is_path(value) -> bool:
    return isinstance(value, (str, os.PathLike))


def study_path(name: str, value) -> Path:
    """The absolute path of study ``name``'s file, checked to exist."""
    path = Path(value).absolute()
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no file"
        msg = f"studies[{name!r}] is the path {str(value)!r}, which is {what}; {HOW}."
        raise FileNotFoundError(msg)
    return path


def read_study(name: str, path: Path) -> AnnData:
    """Study ``name`` read into memory from its h5ad file ``path``."""
    import anndata

    try:
        return anndata.read_h5ad(path)
    except Exception as error:  # h5py's and anndata's errors for a file that is no h5ad
        msg = (
            f"studies[{name!r}]: the file {str(path)!r} cannot be read as an h5ad file "
            f"({type(error).__name__}: {error}); {HOW}."
        )
        raise ValueError(msg) from error


def clusters_of(adata: AnnData) -> list[str]:
    """The study's cluster names present, in category order (else order of appearance)."""
    labels = adata.obs[adata.uns["pairot"]["cell_type_key"]]
    if isinstance(labels.dtype, pd.CategoricalDtype):
        present = set(labels.astype(str))
        return [str(c) for c in labels.cat.categories if str(c) in present]
    return list(dict.fromkeys(labels.astype(str)))


def separated_pairs(adata: AnnData, geom: dict) -> set[tuple[str, str]] | None:
    """The ordered cluster pairs ``(x, y)`` whose all-vs-all DE row passes the thresholds of
    ``geom`` (None: the study has no all-vs-all table, so every pair counts as separated)."""
    table = adata.uns["pairot"].get("de_ava")
    if not isinstance(table, pd.DataFrame):
        return None
    lfc = geom.get("logfc_threshold", 1.0)
    p = geom.get("adj_p_val_threshold", 0.05)
    auroc = geom.get("auroc_threshold", 0.6)
    keep = (table["logFC"] >= lfc) & (table["adj.P.Val"] <= p) & (table["auroc"] >= auroc)
    hit = table.loc[keep, ["cluster", "versus"]].astype(str)
    return set(zip(hit["cluster"], hit["versus"], strict=True))


@dataclass(frozen=True)
class StudyFacts:
    """What the atlas keeps of a study given as a file."""

    path: Path
    clusters: list[str]
    separated: set[tuple[str, str]] | None
    fingerprint: str
    n_obs: int
    n_vars: int
    cluster_sizes: dict[str, int]
    params: dict
