"""The fixed thresholds of the preprocessing and the default of ``min_shared_genes``."""

from __future__ import annotations

#: Minimum total count over all cells for a gene to count as expressed in a study.
MIN_TOTAL_COUNT = 10
#: Minimum number of cells of a (sample, cluster) pair to form a pseudobulk profile.
MIN_CELLS_PER_PROFILE = 2
#: Each pseudobulk profile is scaled to this many counts before ``log1p``.
PSEUDOBULK_TARGET_SUM = 1e5
#: Default of ``preprocess_adatas(min_shared_genes=...)``: the fewest shared genes (after the
#: expression rule and the gene filter) and highly variable genes that the cell term of the
#: cost can rest on. The cell term is the Spearman correlation of two cells' HVG values; with
#: few genes most of a cell's values are zero, so its rank vector is mostly one block of ties
#: (or undefined when all values are equal) and the correlation is noise. On the PBMC demo
#: pair (``benchmarks/bench_min_genes.py``, figures in benchmarks/README.md) Spearman features
#: alone give a query cell its true reference cluster 75-81% of the time with 50 to 400 HVGs,
#: 59% with 30, 44% with 20 and 37% with 10 (where half the cells have all their HVG values
#: equal), against 35% for always answering the largest cluster. With fewer than about 30
#: shared genes the whole method fails as well: the label term's DE has as few genes, and the
#: mapping turns nearly uniform (largest entry 0.17-0.38 with 2-19 shared genes, against 1.0
#: from 29 on; 8 of 8 clusters mapped to their own type from 46 on).
MIN_SHARED_GENES = 50

#: Why fewer genes than ``min_shared_genes`` is an error (part of both messages that say so).
NO_INFORMATION = (
    "the cell term of the cost (the Spearman correlation of the cells' values at the highly "
    "variable genes) carries no information with so few genes (a cell's values are then "
    "mostly zeros, whose ranks tie), so the mapping would rest on the label term (the marker "
    "genes) alone"
)
