"""The many-studies preprocessing: ``preprocess_studies``, the steps of ``preprocess_adatas``
over N studies (each study's DE once; shared genes and HVGs chosen across all of them)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from anndata import AnnData

from .._interrupt import interruptible_call
from ._constants import MIN_SHARED_GENES
from ._counts import check_gene_symbols, parse_counts
from ._preprocess import checked_options, preprocess_steps
from ._study import Columns
from ._study_files import check_out_dir
from ._validate import check_adata, check_study_names


def _per_study(value, argument: str, names: list[str], *, allow_none: bool = False) -> dict:
    """``value`` for every study: one value for all, or a dict with an entry per study."""
    if isinstance(value, Mapping):
        missing = [name for name in names if name not in value]
        extra = [key for key in value if key not in names]
        if missing or extra:
            msg = (
                f"{argument} is a dict without the studies {missing}"
                + (f" and with unknown studies {extra}" if extra else "")
                + f"; give one entry per study ({names}) or one value for all."
            )
            raise KeyError(msg)
        return {name: value[name] for name in names}
    if value is None and not allow_none:
        msg = f"{argument} is None; give an obs column name, or a dict of one per study."
        raise TypeError(msg)
    return dict.fromkeys(names, value)


@interruptible_call
def preprocess_studies(
    studies: Mapping[str, AnnData],
    cell_type_column: str | Mapping[str, str],
    sample_column: str | Mapping[str, str],
    n_top_genes: int = 500,
    filter_genes: bool = False,
    n_samples_auroc: int | None = 10_000,
    n_samples_hvg_selection: int | None = 100_000,
    *,
    random_state: int = 0,
    genes_to_keep: Iterable[str] | None = None,
    genes_to_drop: Iterable[str] | None = None,
    chunk_size: int | None = None,
    store_pseudobulk: bool = True,
    min_shared_genes: int = MIN_SHARED_GENES,
    counts: str | Mapping[str, str] = "X",
    gene_symbols: str | Mapping[str, str | None] | None = None,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict[str, AnnData] | dict[str, Path]:
    """Prepare many studies at once for pairwise ``DatasetMap`` fits (an atlas).

    The steps of :func:`preprocess_adatas`, over all the studies: the genes expressed (total
    count > 10) in every study, in the first study's order, through the optional gene filter;
    each study's pseudobulk limma and AUROC differential expression once, on those genes; the
    ``n_top_genes`` highly variable genes chosen jointly over all studies (at most
    ``n_samples_hvg_selection`` cells of each, study as batch, ranked by the number of
    studies selecting each gene and then by its mean normalized dispersion, as scanpy's
    ``batch_key`` does). Every pair of the outputs is what ``DatasetMap`` takes; with two
    studies the outputs equal :func:`preprocess_adatas`'s (apart from ``uns["pairot"]
    ["params"]``'s per-study keys and ``uns["pairot"]["study"]``).

    Parameters
    ----------
    studies
        Study name -> study (AnnData in memory, backed or lazy, or a SOMA query, as in
        :func:`preprocess_adatas`), at least two, names distinct also ignoring case. The
        names are used in messages and in the outputs.
    cell_type_column, sample_column
        The ``obs`` columns of each cell's cluster and sample (donor): one name for all
        studies, or a dict with one per study.
    n_top_genes, filter_genes, n_samples_auroc, n_samples_hvg_selection, random_state, \
genes_to_keep, genes_to_drop, chunk_size, store_pseudobulk, min_shared_genes
        As in :func:`preprocess_adatas`; the HVG subsamples are drawn study after study, in
        the order of ``studies``, from one generator seeded with ``random_state``.
    counts, gene_symbols
        Where each study's counts are (``"X"``, ``"raw"``, ``"layers/<name>"``) and the
        ``var`` column of its gene symbols (``None``: ``var_names``): one value for all
        studies, or a dict with one per study (see :func:`preprocess_adatas`).
    out_dir
        ``None`` (default): the outputs are returned in memory. A folder (created if
        missing; it must be empty unless ``overwrite``): each study's output is written to
        ``out_dir/<safe name>.h5ad`` as soon as it is built and released, and the function
        returns the paths (see Returns). The safe name is the study's name with characters
        outside ``[A-Za-z0-9_.-]`` replaced by ``_`` (at most 40 kept), ``-`` and 8 hex
        digits of the name's SHA-1. The files read back equal the in-memory outputs; give
        the dict to :class:`pairot.tl.AtlasMap` as it is.
    overwrite
        With ``out_dir``: write into a non-empty folder, replacing the files of these
        studies' names (other files are left). There is no partial resume: a run writes
        every study again (the studies' outputs depend on each other through the shared
        genes and HVGs); ``pairot atlas`` reuses a whole folder when its inputs and options
        are unchanged.

    Returns
    -------
    dict
        Study name -> preprocessed AnnData (the form :func:`preprocess_adatas` returns), in
        the order of ``studies``; ``uns["pairot"]["study"]`` is the study's name and
        ``uns["pairot"]["params"]`` records every study's ``counts_<name>`` and
        ``gene_symbols_<name>``. With ``out_dir``: study name -> :class:`pathlib.Path` of its
        h5ad file (absolute), in the same order.

    Notes
    -----
    A gene that some study does not measure (or does not express) is left out of every
    study: the cell term of the cost compares the same genes in every pair. An INFO line per
    study says how many of its expressed genes go that way; fewer than ``min_shared_genes``
    in common is a ``ValueError`` giving the number (a targeted panel among whole
    transcriptomes limits every pair: preprocess that pair apart with
    :func:`preprocess_adatas`). The studies are read one after the other, four passes each,
    in bounded memory as :func:`preprocess_adatas` (docs/method.md#preprocessing). Without
    ``out_dir`` the outputs of all studies (HVG counts, DE tables and, with
    ``store_pseudobulk``, the summed profiles) are held in memory together. With ``out_dir``
    only small summaries are held across studies (each study's expressed genes for the
    shared genes, its HVG statistics, its labels): the peak is one study's passes plus one
    study's output, and each study's DE tables and stored profiles wait in a file in
    ``out_dir`` between its DE and its output.
    """
    names = check_study_names(studies, what="AnnData", one_study="preprocess_adatas")
    for name in names:
        check_adata(studies[name], name)
    if out_dir is None and overwrite is not False:
        msg = f"overwrite={overwrite!r} is given without out_dir; overwrite needs an out_dir."
        raise ValueError(msg)
    options = checked_options(
        n_top_genes=n_top_genes,
        filter_genes=filter_genes,
        n_samples_auroc=n_samples_auroc,
        n_samples_hvg_selection=n_samples_hvg_selection,
        random_state=random_state,
        genes_to_keep=genes_to_keep,
        genes_to_drop=genes_to_drop,
        chunk_size=chunk_size,
        store_pseudobulk=store_pseudobulk,
        min_shared_genes=min_shared_genes,
    )
    clusters = _per_study(cell_type_column, "cell_type_column", names)
    samples = _per_study(sample_column, "sample_column", names)
    counts_of = _per_study(counts, "counts", names)
    symbols_of = _per_study(gene_symbols, "gene_symbols", names, allow_none=True)

    def argument(base: str, name: str, value) -> str:
        return f"{base}[{name!r}]" if isinstance(value, Mapping) else base

    columns = {
        name: Columns(
            name,
            clusters[name],
            samples[name],
            argument("cell_type_column", name, cell_type_column),
            argument("sample_column", name, sample_column),
        )
        for name in names
    }
    arguments = {
        name: (argument("counts", name, counts), argument("gene_symbols", name, gene_symbols))
        for name in names
    }
    locations = {name: parse_counts(counts_of[name], arguments[name][0]) for name in names}
    symbols = {name: check_gene_symbols(symbols_of[name], arguments[name][1]) for name in names}
    adatas = {name: studies[name] for name in names}
    if out_dir is None:
        return preprocess_steps(adatas, columns, locations, symbols, arguments=arguments, **options)
    folder = check_out_dir(out_dir, overwrite)
    try:
        return preprocess_steps(
            adatas, columns, locations, symbols, arguments=arguments, out_dir=folder, **options
        )
    finally:  # the parked intermediates of an interrupted or failed run
        for leftover in folder.glob(".parked-*.pkl"):
            leftover.unlink(missing_ok=True)
