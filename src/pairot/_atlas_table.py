"""The words of ``AtlasMap.harmonize``'s table, in a module without imports: the table's own
columns (the study columns precede them), the entry of a study without a counterpart, and the
separator of clusters of one study joined in one row. ``tl/_atlas`` writes the table with them,
``pl.atlas`` and the command line read it, ``datasets.simulate_atlas`` writes its truth so."""

#: The harmonized table's own columns, in order; no study may be named so.
ROW_COLUMNS = (
    "relation",
    "group",
    "n_studies",
    "n_links",
    "n_tested",
    "n_reciprocal",
    "mean_mapping",
    "max_distance",
    "joined",
)
#: A study's entry in a row where it has no cluster.
NONE = "NONE"
#: Between the clusters of one study that the row holds as one type.
JOIN = " | "
