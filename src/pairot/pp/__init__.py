"""Preprocessing: shared genes, pseudobulk differential expression, HVGs, downsampling."""

from ._genes import flag_uninformative_genes
from ._markers import filter_genes_ava, filter_genes_ova, select_genes, similar_clusters
from ._preprocess import preprocess_adatas, rank_genes_limma
from ._sampling import downsample_indices
from ._upstream import de_tables_from_dicts, de_tables_to_dicts

__all__ = [
    "de_tables_from_dicts",
    "de_tables_to_dicts",
    "downsample_indices",
    "filter_genes_ava",
    "filter_genes_ova",
    "flag_uninformative_genes",
    "preprocess_adatas",
    "rank_genes_limma",
    "select_genes",
    "similar_clusters",
]
