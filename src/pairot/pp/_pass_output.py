"""Pass 4 over a study's counts: its output counts (the HVGs), then its output AnnData."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._interrupt import check as check_interrupt
from .._logging import logger
from ._counts import GENE_ID_COLUMN
from ._reader import _is_dask
from ._stream import PassSpec, stack_rows
from ._study import Columns, Study
from ._validate import study

#: The obs columns upstream pairOT's preprocessing writes the clusters and samples to; code
#: written against its outputs reads them, so pairot's outputs carry them too.
UPSTREAM_COLUMNS = {"cluster": "cell_type_author", "sample": "sample_id"}


def read_output_counts(study_: Study, out_columns: np.ndarray):
    """Pass 4: the study's counts at ``out_columns``, in its own dtype, dense or CSR as it is."""
    dense = study_.reader.dense
    check_interrupt()
    start = time.perf_counter()
    spec = PassSpec(output_index=out_columns, output_dense=dense)
    result = study_.read(spec)
    X_out = stack_rows(result.output, out_columns.size, study_.reader.dtype, dense=dense)
    del result
    logger.info("%s: output counts read in %.1f s", study(study_.name), time.perf_counter() - start)
    return X_out


def output_adata(
    study_: Study,
    columns: Columns,
    X_out,
    out_columns: np.ndarray,
    out_genes: pd.Index,
    tables: tuple[pd.DataFrame, pd.DataFrame],
    params: dict,
    pseudobulk: dict | None,
) -> AnnData:
    """The output AnnData of a study: ``X_out`` at the genes ``out_genes`` (columns
    ``out_columns`` of its ``var``), its labels, ``obsm`` and ``uns["pairot"]`` (the DE
    ``tables``, a copy of ``params`` and, unless ``None``, the stored ``pseudobulk``)."""
    de_ova, de_ava = tables
    del tables
    ct_col, sample_col = columns.cluster, columns.sample
    obs = study_.obs.copy()
    obs[ct_col] = study_.clusters
    obs[sample_col] = study_.samples
    _upstream_columns(obs, ct_col, sample_col, study_.name)
    var = study_.var.iloc[out_columns].copy()
    var.index = out_genes
    if study_.gene_ids is not None:  # symbols name the genes: keep the ids beside them
        if GENE_ID_COLUMN in var.columns:
            logger.warning(
                "%s: the output's var[%r] holds the original gene ids (var_names); the input's "
                "own %r column is replaced there (the input is unchanged).",
                study(study_.name),
                GENE_ID_COLUMN,
                GENE_ID_COLUMN,
            )
        var[GENE_ID_COLUMN] = np.asarray(study_.gene_ids[out_columns], dtype=str)
    out = AnnData(
        X=X_out,
        obs=obs,
        var=var,
        obsm={key: _materialized(value) for key, value in study_.obsm.items()},
        uns={
            "pairot": {
                "cell_type_key": ct_col,
                "sample_key": sample_col,
                "study": study_.name,
                "de_ova": de_ova,
                "de_ava": de_ava,
                "params": dict(params),
            }
        },
    )
    if pseudobulk is not None:
        out.uns["pairot"]["pseudobulk"] = pseudobulk
    return out


def _upstream_columns(obs: pd.DataFrame, ct_col: str, sample_col: str, name: str) -> None:
    """Add ``cell_type_author`` / ``sample_id`` copies of the cluster and sample columns to
    the output's ``obs`` (a copy), warning when they replace a different column of that name."""
    for kind, column, source in (
        ("cluster", UPSTREAM_COLUMNS["cluster"], ct_col),
        ("sample", UPSTREAM_COLUMNS["sample"], sample_col),
    ):
        if column == source:
            continue
        if column in obs.columns and column not in (ct_col, sample_col):
            logger.warning(
                "%s: the output's obs[%r] holds the %s labels (a copy of obs[%r], as upstream "
                "pairOT writes them); the input's own %r column is replaced there (the input "
                "is unchanged).",
                study(name),
                column,
                kind,
                source,
                column,
            )
        elif column in obs.columns:
            # the other label column has this name (e.g. clusters in "sample_id"): keep it
            logger.warning(
                "%s: obs[%r] is the %s column, so the upstream copy of the %s labels is not "
                "written there.",
                study(name),
                column,
                "cluster" if column == ct_col else "sample",
                kind,
            )
            continue
        obs[column] = obs[source]


def _materialized(value):
    """An ``obsm`` entry as an in-memory copy (computed when it is a dask array)."""
    if _is_dask(value):
        value = value.compute()
    if isinstance(value, pd.DataFrame):
        return value.copy()
    if sparse.issparse(value):
        return value.copy()
    return np.array(value)
