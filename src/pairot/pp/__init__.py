"""Preprocessing: shared genes, pseudobulk differential expression, HVGs, downsampling; of a
pair (``preprocess_adatas``) or of many studies (``preprocess_studies``)."""

from ._gene_filter import gene_filter_mask
from ._genes import flag_uninformative_genes
from ._markers import filter_genes_ava, filter_genes_ova, select_genes, similar_clusters
from ._preprocess import preprocess_adatas, rank_genes_limma
from ._preprocess_studies import preprocess_studies
from ._sampling import downsample_indices
from ._upstream import de_tables_from_dicts, de_tables_to_dicts

__all__ = [
    "FILTERED_GENES",
    "OFFICIAL_GENES",
    "de_tables_from_dicts",
    "de_tables_to_dicts",
    "downsample_indices",
    "filter_genes_ava",
    "filter_genes_ova",
    "flag_uninformative_genes",
    "gene_filter_mask",
    "preprocess_adatas",
    "preprocess_studies",
    "rank_genes_limma",
    "select_genes",
    "similar_clusters",
]


def __getattr__(name: str):
    """``OFFICIAL_GENES`` / ``FILTERED_GENES``: the gene tables, read on first use.

    Each access returns a new DataFrame (changing it does not change the tables pairot uses):
    ``OFFICIAL_GENES`` has the columns ``feature_name, origin``, ``FILTERED_GENES`` the columns
    ``feature_name, origin, filter_type``. See docs/method.md#gene-filtering.
    """
    from . import _gene_tables

    if name == "OFFICIAL_GENES":
        return _gene_tables.official_genes()
    if name == "FILTERED_GENES":
        return _gene_tables.filtered_genes()
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
