"""Simulated pairs of annotated single-cell RNA-seq studies with known cluster correspondence.

The simulator draws raw UMI counts from a negative-binomial (gamma-Poisson) model whose
cell-type programs form a two-level hierarchy (lineages -> cell types), with donor and study
batch effects, log-normal library sizes and imbalanced cell-type proportions. It is written to
scale to benchmark-size pairs (hundreds of thousands of cells x tens of thousands of genes):
cells are generated in chunks and the work per chunk is proportional to the number of
non-zero counts plus a dense block over the genes that are well expressed in that chunk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["simulate_pair", "PROTOCOLS", "SCENARIOS", "UNINFORMATIVE_GENES"]

#: Scenarios understood by :func:`simulate_pair`.
SCENARIOS: tuple[str, ...] = ("one_to_one", "coarse_reference", "missing_type")
#: Reference protocols understood by :func:`simulate_pair` (``reference_protocol``).
PROTOCOLS: tuple[str, ...] = ("umi", "full_length")

#: Realistic uninformative gene names included in every simulated study (mitochondrial,
#: ribosomal, lncRNA-like, clone-based and immune-receptor segment names). They are highly or
#: moderately expressed, never markers, and give gene filters something to catch.
UNINFORMATIVE_GENES: tuple[str, ...] = (
    "MT-CO1",
    "MT-CO2",
    "MT-ND1",
    "MT-ATP6",
    "RPL3",
    "RPL13",
    "RPS6",
    "RPS27A",
    "MRPL12",
    "MRPS18A",
    "LINC00486",
    "RP11-34P13.7",
    "AC012345.1",
    "TRBV20-1",
    "IGHV3-23",
)

# Genes whose expected count (at the mean library size) is below this threshold in every
# group of a chunk are drawn as Poisson counts (no gamma noise): see ``_sample_chunk``.
_POISSON_THRESHOLD = 0.2
# Cells per generation chunk. Part of the random stream: changing it changes the draws.
_CHUNK_SIZE = 2048
# Minimum mean count per cell (at the mean library size) of a gene chosen as a marker.
_MARKER_MIN_MEAN = 0.1
# Log-scale sd of the per-gene dispersion around ``dispersion``.
_DISPERSION_LOG_SD = 0.5
# Concentration of the Dirichlet that draws donor proportions within a study.
_DONOR_CONCENTRATION = 10.0
# ``reference_protocol="full_length"``: median gene length (bp), the bounds its log-normal
# lengths are clipped to, and the mean number of sequenced fragments per captured molecule of a
# gene of median length (fragments scale with length; see ``_full_length_counts``).
_MEDIAN_GENE_LENGTH = 2000.0
_GENE_LENGTH_BOUNDS = (200.0, 50_000.0)
_FRAGMENTS_PER_MOLECULE = 2.0
# Defaults of the full-length protocol's parameters.
_DEFAULT_GENE_LENGTH_LOG_SD = 0.7
_DEFAULT_PSEUDO_COUNT_SCALE = 100.0


@dataclass(frozen=True)
class _Study:
    """Everything needed to draw one study's counts, plus its labels."""

    name: str
    profiles: np.ndarray  # (n_groups, n_genes) expression proportions, rows sum to 1
    group_of_cell: np.ndarray  # (n_cells,) row of ``profiles`` for each cell
    type_of_cell: np.ndarray  # (n_cells,) fine cell-type index
    donor_of_cell: np.ndarray  # (n_cells,) donor index
    library_size: np.ndarray  # (n_cells,) expected total counts
    seed: np.random.SeedSequence


def simulate_pair(
    n_cells_query: int = 2000,
    n_cells_reference: int = 2000,
    n_genes: int = 2000,
    *,
    scenario: str = "one_to_one",
    n_cell_types: int = 8,
    n_lineages: int | None = None,
    n_samples_query: int = 4,
    n_samples_reference: int = 4,
    mean_library_size: float = 2000.0,
    library_size_log_sd: float = 0.4,
    n_markers_lineage: int = 25,
    n_markers_type: int = 20,
    marker_log_fold_change: tuple[float, float] = (1.5, 3.0),
    baseline_log_sd: float = 2.2,
    dispersion: float = 0.2,
    donor_effect_sd: float = 0.1,
    study_effect_sd: float = 0.2,
    type_imbalance: float = 10.0,
    composition_log_sd: float = 0.3,
    min_cells_per_type: int | None = None,
    random_state: int | np.random.Generator = 0,
    missing_type_similarity: float = 0.0,
    n_reference_only_types: int = 0,
    mean_library_size_reference: float | None = None,
    reference_protocol: str = "umi",
    gene_length_log_sd: float | None = None,
    pseudo_count_scale: float | None = None,
    marker_divergence: float = 0.0,
) -> tuple[ad.AnnData, ad.AnnData]:
    """Simulate a query and a reference study with a known cluster correspondence.

    Parameters
    ----------
    n_cells_query, n_cells_reference
        Number of cells of each study.
    n_genes
        Number of genes, including the :data:`UNINFORMATIVE_GENES` (named ``MT-CO1``, ``RPL3``,
        ...); the others are named ``GENE00001``, ``GENE00002``, ...
    scenario
        ``"one_to_one"``: both studies hold the same cell types under the same names.
        ``"coarse_reference"``: the reference is annotated at the lineage level (its cells
        are drawn from the same fine types, but labelled with the lineage ``"L1"``, ...); each
        fine query type maps to its parent lineage. ``"missing_type"``: one query cell type
        (chosen at random among types that have a sibling, if any) is absent from the
        reference; its truth row has ``reference_cluster == ""``.
    n_cell_types
        Number of fine cell types (>= 2).
    n_lineages
        Number of lineages the cell types are split into (contiguously, as evenly as
        possible). Default ``max(2, round(sqrt(n_cell_types)))``, capped at ``n_cell_types``.
    n_samples_query, n_samples_reference
        Number of donors (``sample_id`` values) per study.
    mean_library_size
        Mean expected total UMI count per cell.
    library_size_log_sd
        Standard deviation of the log-normal per-cell library size (mean kept at
        ``mean_library_size``).
    n_markers_lineage, n_markers_type
        Number of up-regulated genes of each lineage program and of each cell-type program.
        All programs use disjoint genes.
    marker_log_fold_change
        ``(low, high)``: each program gene's effect is drawn uniformly in this range, in
        natural-log units of expression.
    baseline_log_sd
        Standard deviation of the normal per-gene baseline log-abundance. Larger values give a
        more skewed gene-expression distribution and sparser counts.
    dispersion
        Median negative-binomial dispersion ``phi`` (variance ``mu + phi * mu**2``); per-gene
        values vary log-normally around it and are capped at 1.
    donor_effect_sd, study_effect_sd
        Standard deviation of the per-donor and per-study per-gene log-scale batch effects.
    type_imbalance
        Ratio of the expected proportion of the most to the least abundant cell type (>= 1);
        proportions form a geometric series, assigned to the types in a random order.
    composition_log_sd
        Log-scale noise applied to the proportions separately in each study, so the two
        compositions differ.
    min_cells_per_type
        Each cell type present in a study gets at least this many cells. Default
        ``5 * n_samples`` of that study, so that pseudobulk over (donor, type) pairs usually
        finds >= 2 cells per pair even for the rarest type.
    random_state
        Seed (``int``) or :class:`numpy.random.Generator`; the same seed gives identical
        studies. Only local generators are used, never the global numpy state.
    missing_type_similarity
        ``"missing_type"`` only: how close the missing type is to its nearest type, a number
        in ``[0, 1)``. Its log-expression profile becomes ``(1 - s) * own + s * nearest``,
        where ``nearest`` is the sibling type (same lineage) whose profile is closest in
        Euclidean distance (any type when it has no sibling). ``0`` (default) leaves it as
        drawn, and draws nothing extra: the outputs are then exactly those of earlier
        versions. Values towards 1 make the missing type ever harder to tell from a
        reference type (at 1 it would be one). When ``s > 0``, ``params`` also records
        ``missing_type_similarity`` and ``missing_type_nearest``; the ``markers`` table
        lists the programs as drawn, before the blend.
    n_reference_only_types
        How many of the ``n_cell_types`` fine types only the reference holds (default 0), as
        when a reference is annotated more finely than the query or covers more of the tissue:
        23 reference against 16 query interneuron types in
        docs/method.md#accuracy-on-real-studies. They are chosen at random, preferring types
        whose lineage keeps another type in the query (so they have a sibling there), from a
        stream of their own: the reference is exactly that of the default draw, and the query
        differs only in lacking them. Every query type keeps its true match; the truth table has
        no rows for them. With balanced marginals their share of the reference mass must come
        from some query cluster. ``params`` records ``n_reference_only_types`` and
        ``reference_only_types`` (comma-separated) when > 0.
    mean_library_size_reference
        Mean expected total count per reference cell, when the two studies differ in depth
        (and so in how many genes a cell detects); default ``None``, the same
        ``mean_library_size`` as the query. Recorded in ``params`` when given.
    reference_protocol
        ``"umi"`` (default): the reference holds UMI counts like the query. ``"full_length"``:
        full-length reads reported as gene-length-normalized pseudo-counts, as
        ``round(100 * RPKM)`` in Tasic et al. 2016. The molecules of a cell are drawn as for
        UMI counts; each captured molecule of gene ``g`` then yields
        ``Poisson(2 * len_g / 2000)`` sequenced fragments (longer transcripts give more
        fragments, shorter ones are lost more often: the length bias of full-length
        protocols), with gene lengths ``len_g = 2000 * LogNormal(0, gene_length_log_sd)`` bp
        clipped to [200, 50,000]; and ``X = round(pseudo_count_scale * RPKM)`` with
        ``RPKM_g = fragments_g / (len_g / 1e3) / (sum of the cell's fragments / 1e6)``. The
        length normalization removes the length from the expected values (``X_g / sum_h X_h``
        has the molecules' expected share), not from the detection: a short gene is zero more
        often. ``X`` is then float64 (integer values beyond float32's exact range),
        ``var["gene_length"]`` of the reference holds the lengths, and ``params`` records the
        protocol and its two parameters. The lengths and fragments come from a stream of their
        own: the molecules are those of the ``"umi"`` draw.
    gene_length_log_sd
        ``"full_length"`` only: log-scale sd of the gene lengths (default ``None``: 0.7); must
        be >= 0.
    pseudo_count_scale
        ``"full_length"`` only: the factor on RPKM before rounding (default ``None``: 100, as
        in Tasic et al. 2016); must be > 0. Small values round many entries to 0.
    marker_divergence
        Share in [0, 1] of each cell type's own program genes (``n_markers_type``, rounded to
        the nearest integer) that mark another type in the reference: there the gene's
        up-regulation moves from its type to a type drawn at random among the others, as a gene
        that is a marker of one type in one lab's data and of another type in the other's (Gal:
        Int14 in Zeisel, Sst_Th in Tasic, see docs/method.md#accuracy-on-real-studies). Default
        0. The query keeps the programs as drawn (the ``markers`` table);
        ``uns["simulation"]["moved_markers"]`` (columns ``gene, from_type, to_type,
        log_fold_change``) lists the moved genes and ``params`` records the share, both only
        when > 0. Drawn from a stream of its own: the query is that of the default draw.

    Returns
    -------
    ``(query, reference)``, two :class:`anndata.AnnData` with

    - ``X``: raw UMI counts as a :class:`scipy.sparse.csr_matrix` of dtype ``float32``
      (integer values, exactly representable; float32 so that normalization works in place);
      for a ``"full_length"`` reference, its pseudo-counts in float64;
    - ``obs``: ``cell_type`` (Categorical; lineage names for the ``"coarse_reference"``
      reference), ``sample_id`` (Categorical donor, e.g. ``"query_donor1"``), ``cell_type_fine``
      (the fine type each cell was drawn from) and ``lineage``;
    - ``var_names``: gene symbols;
    - ``uns["simulation"]``: ``truth`` (DataFrame with columns ``query_cluster``,
      ``reference_cluster`` and ``relation`` in ``{"identical", "parent", "absent"}``; one row
      per query cluster, ``reference_cluster == ""`` where the query cluster has no
      counterpart), ``cell_types`` (fine type, lineage, expected proportion in each study),
      ``markers`` (gene, program, level, log_fold_change) and ``params`` (scalars). All of it
      survives ``write_h5ad`` / ``read_h5ad``.

    Notes
    -----
    Model. Every gene ``g`` has a baseline log-abundance ``b_g ~ N(0, baseline_log_sd)``
    (upper tail clipped at 3.5 sd so that no gene dominates a library; the uninformative genes
    sit near the top). Lineage ``l`` adds ``delta`` to the genes of its program, cell type
    ``t`` adds ``delta`` to the genes of its own program (``delta ~ U(marker_log_fold_change)``),
    so sibling types share the lineage program and differ by their type programs. Program genes
    are drawn among the genes expressed at >= 0.1 UMI per cell on average (at the mean library
    size), top 1% excluded, so that their fold changes show in log1p-normalized pseudobulk.
    Study ``s`` and donor ``d`` add per-gene ``N(0, study_effect_sd)`` and
    ``N(0, donor_effect_sd)`` shifts. The expression proportions of cell type ``t`` from donor
    ``d`` are ``p = softmax(b + lineage + type + study + donor)``. A cell with library size
    ``L ~ mean_library_size * LogNormal(-sigma**2 / 2, sigma)`` has counts
    ``X_g ~ Poisson(L * p_g * G_g)`` with ``G_g ~ Gamma(1 / phi_g, phi_g)`` (mean 1), i.e.
    negative-binomial with mean ``L * p_g`` and dispersion ``phi_g``.

    Approximation. For the genes whose expected count is below 0.2 (at the mean library size)
    in every (type, donor) group of a chunk of cells, the gamma noise is dropped and the counts
    are Poisson: their total per (group, gene) is drawn once and spread over the group's cells
    in proportion to their library sizes (Poisson splitting), at a cost proportional to the
    number of counts. At such means the negative-binomial and Poisson laws differ by
    ``O(phi * mu**2)`` in the probability of a zero (about 1% or less), and the mean is exact.
    Only the remaining, well-expressed genes (about 2,000 of 20,000 at 2,000 UMI per cell) get
    the dense gamma-Poisson draw.

    Scale. 200,000 + 200,000 cells x 20,000 genes, 30 cell types, 8 donors per study and
    2,000 UMI per cell (about 1,020 non-zeros per cell) take about 65-75 s and 3.6 GiB peak
    RSS on one CPU core, of which 3.0 GiB is the two final matrices.

    Cells are ordered by donor (as if samples were concatenated), in random order within a
    donor.

    The gene-specific multiplicative bias between two studies' protocols (a gene captured or
    sequenced better by one of them) is ``study_effect_sd``: each study multiplies every gene
    by its own ``exp(N(0, study_effect_sd))``, so the two studies differ per gene by a
    log-ratio of sd ``sqrt(2) * study_effect_sd`` (about 0.9 in natural-log units on the
    Zeisel-Tasic pair, i.e. ``study_effect_sd`` about 0.65). Different detection rates are
    ``mean_library_size_reference`` (depth) and ``reference_protocol="full_length"``
    (gene-length-dependent detection).
    """
    _check_int("n_cells_query", n_cells_query, 1)
    _check_int("n_cells_reference", n_cells_reference, 1)
    _check_int("n_genes", n_genes, 1)
    if scenario not in SCENARIOS:
        msg = f"scenario must be one of {SCENARIOS}, got {scenario!r}; pick one of those."
        raise ValueError(msg)
    _check_int("n_cell_types", n_cell_types, 2)
    if n_lineages is None:
        n_lineages = min(n_cell_types, max(2, round(math.sqrt(n_cell_types))))
    _check_int("n_lineages", n_lineages, 1)
    if n_lineages > n_cell_types:
        msg = (
            f"n_lineages={n_lineages} exceeds n_cell_types={n_cell_types}; pass at most "
            "n_cell_types lineages (or None for the default)."
        )
        raise ValueError(msg)
    _check_int("n_samples_query", n_samples_query, 1)
    _check_int("n_samples_reference", n_samples_reference, 1)
    _check_positive("mean_library_size", mean_library_size)
    _check_nonnegative("library_size_log_sd", library_size_log_sd)
    _check_int("n_markers_lineage", n_markers_lineage, 0)
    _check_int("n_markers_type", n_markers_type, 1)
    lfc_low, lfc_high = _check_lfc_range(marker_log_fold_change)
    _check_nonnegative("baseline_log_sd", baseline_log_sd)
    _check_positive("dispersion", dispersion)
    _check_nonnegative("donor_effect_sd", donor_effect_sd)
    _check_nonnegative("study_effect_sd", study_effect_sd)
    _check_nonnegative("composition_log_sd", composition_log_sd)
    if not (isinstance(type_imbalance, int | float) and type_imbalance >= 1):
        msg = f"type_imbalance must be a number >= 1, got {type_imbalance!r}; pass e.g. 10."
        raise ValueError(msg)
    if min_cells_per_type is not None:
        _check_int("min_cells_per_type", min_cells_per_type, 1)
    similarity = missing_type_similarity
    if (
        isinstance(similarity, bool)
        or not isinstance(similarity, int | float | np.integer | np.floating)
        or not 0 <= similarity < 1
    ):
        msg = (
            f"missing_type_similarity must be a number in [0, 1), got {similarity!r}; pass "
            "0 for the missing type as drawn, e.g. 0.5 for one halfway to its nearest type."
        )
        raise ValueError(msg)
    if similarity and scenario != "missing_type":
        msg = (
            f"missing_type_similarity={similarity!r} applies to scenario='missing_type' only, "
            f"got scenario={scenario!r}; pass 0 or use scenario='missing_type'."
        )
        raise ValueError(msg)
    n_reference_only = n_reference_only_types
    _check_int("n_reference_only_types", n_reference_only, 0)
    divergence = marker_divergence
    if (
        isinstance(divergence, bool)
        or not isinstance(divergence, int | float | np.integer | np.floating)
        or not 0 <= divergence <= 1
    ):
        msg = (
            f"marker_divergence must be a number in [0, 1], got {divergence!r}; pass 0 for "
            "the same programs in both studies, e.g. 0.3 for a third of each type's genes "
            "marking another type in the reference."
        )
        raise ValueError(msg)
    n_query_types = n_cell_types - n_reference_only - (scenario == "missing_type")
    if n_query_types < 2:
        msg = (
            f"n_reference_only_types={n_reference_only} leaves the query {n_query_types} of "
            f"n_cell_types={n_cell_types} types (scenario={scenario!r}); the query needs at "
            f"least 2: pass n_reference_only_types <= "
            f"{n_cell_types - 2 - (scenario == 'missing_type')} or more n_cell_types."
        )
        raise ValueError(msg)
    library_reference = mean_library_size
    if mean_library_size_reference is not None:
        _check_positive("mean_library_size_reference", mean_library_size_reference)
        library_reference = float(mean_library_size_reference)
    if reference_protocol not in PROTOCOLS:
        msg = (
            f"reference_protocol must be one of {PROTOCOLS}, got {reference_protocol!r}; pass "
            "'umi' (UMI counts, the default) or 'full_length' (round(100 x RPKM) of "
            "full-length reads)."
        )
        raise ValueError(msg)
    full_length = reference_protocol == "full_length"
    for name, value in (
        ("gene_length_log_sd", gene_length_log_sd),
        ("pseudo_count_scale", pseudo_count_scale),
    ):
        if value is not None and not full_length:
            msg = (
                f"{name}={value!r} applies to reference_protocol='full_length' only, got "
                f"reference_protocol={reference_protocol!r}; leave {name}=None or pass "
                "reference_protocol='full_length'."
            )
            raise ValueError(msg)
    if full_length:
        if gene_length_log_sd is None:
            gene_length_log_sd = _DEFAULT_GENE_LENGTH_LOG_SD
        _check_nonnegative("gene_length_log_sd", gene_length_log_sd)
        if pseudo_count_scale is None:
            pseudo_count_scale = _DEFAULT_PSEUDO_COUNT_SCALE
        _check_positive("pseudo_count_scale", pseudo_count_scale)
    n_uninformative = len(UNINFORMATIVE_GENES)
    n_program_genes = n_lineages * n_markers_lineage + n_cell_types * n_markers_type
    if n_genes < n_uninformative + n_program_genes:
        msg = (
            f"n_genes={n_genes} is too small for {n_lineages} lineage programs of "
            f"{n_markers_lineage} genes, {n_cell_types} type programs of {n_markers_type} "
            f"genes and {n_uninformative} uninformative genes; pass n_genes >= "
            f"{math.ceil(1.4 * (n_uninformative + n_program_genes))} or fewer markers."
        )
        raise ValueError(msg)
    n_types_reference = n_cell_types - (scenario == "missing_type")
    for name, n_cells, n_samples, n_types in (
        ("n_cells_query", n_cells_query, n_samples_query, n_query_types),
        ("n_cells_reference", n_cells_reference, n_samples_reference, n_types_reference),
    ):
        min_cells = 5 * n_samples if min_cells_per_type is None else min_cells_per_type
        if n_cells < n_types * min_cells:
            msg = (
                f"{name}={n_cells} is too small for {n_types} cell types with at least "
                f"{min_cells} cells each; pass {name} >= {n_types * min_cells} or lower "
                "min_cells_per_type."
            )
            raise ValueError(msg)

    seed = _seed_sequence(random_state)
    seed_model, seed_query, seed_reference = seed.spawn(3)
    # the opt-in parameters draw from streams of their own, spawned only when used, so that
    # every default output stays bit-identical to earlier versions
    seed_types = seed_protocol = seed_divergence = None
    if n_reference_only or full_length or divergence:
        seed_types, seed_protocol, seed_divergence = seed.spawn(3)
    rng = np.random.default_rng(seed_model)

    # --- hierarchy and names, gene baseline and programs -----------------------------------
    lineage_of_type, lineage_names, type_names, gene_names = _hierarchy(
        n_cell_types, n_lineages, n_genes
    )
    type_log, markers, phi = _programs(
        rng,
        lineage_of_type,
        lineage_names,
        type_names,
        gene_names,
        n_markers_lineage=n_markers_lineage,
        n_markers_type=n_markers_type,
        lfc_range=(lfc_low, lfc_high),
        baseline_log_sd=baseline_log_sd,
        mean_library_size=mean_library_size,
        dispersion=dispersion,
    )

    # --- composition ---------------------------------------------------------------------------
    ranks = rng.permutation(n_cell_types)
    base_prop = type_imbalance ** (-ranks / (n_cell_types - 1))
    base_prop /= base_prop.sum()
    present_query = np.ones(n_cell_types, dtype=bool)
    present_reference = np.ones(n_cell_types, dtype=bool)
    missing = ""
    if scenario == "missing_type":
        sizes = np.bincount(lineage_of_type, minlength=n_lineages)
        candidates = np.flatnonzero(sizes[lineage_of_type] >= 2)
        if candidates.size == 0:
            candidates = np.arange(n_cell_types)
        t_missing = int(rng.choice(candidates))
        present_reference[t_missing] = False
        missing = type_names[t_missing]
        if similarity:  # no random draws here: the stream stays that of similarity 0
            nearest = _nearest_type(type_log, lineage_of_type, t_missing)
            type_log[t_missing] = (1.0 - similarity) * type_log[t_missing] + (
                similarity * type_log[nearest]
            )
    reference_only = _reference_only_types(
        n_reference_only, lineage_of_type, present_reference, seed_types
    )
    present_query[reference_only] = False

    type_log_reference, moved = type_log, None
    if divergence:
        type_log_reference, moved = _move_markers(
            type_log, markers, type_names, gene_names, divergence, n_markers_type, seed_divergence
        )

    studies = []
    expected_props = {}
    for name, n_cells, n_samples, present, seed_study, mean_library in (
        ("query", n_cells_query, n_samples_query, present_query, seed_query, mean_library_size),
        (
            "reference",
            n_cells_reference,
            n_samples_reference,
            present_reference,
            seed_reference,
            library_reference,
        ),
    ):
        study_rng = np.random.default_rng(seed_study.spawn(1)[0])
        prop = base_prop * np.exp(rng.normal(0.0, composition_log_sd, size=n_cell_types)) * present
        prop /= prop.sum()
        expected_props[name] = prop
        min_cells = 5 * n_samples if min_cells_per_type is None else min_cells_per_type
        n_per_type = _allocate(n_cells, prop, min_cells)
        donor_prop = rng.dirichlet(np.full(n_samples, _DONOR_CONCENTRATION))
        study_effect = rng.normal(0.0, study_effect_sd, size=n_genes)
        donor_effect = rng.normal(0.0, donor_effect_sd, size=(n_samples, n_genes))
        # cells: types, donors, order (by donor, random within donor)
        type_of_cell = np.repeat(np.arange(n_cell_types), n_per_type)
        donor_of_cell = study_rng.choice(n_samples, size=n_cells, p=donor_prop)
        order = np.lexsort((study_rng.permutation(n_cells), donor_of_cell))
        type_of_cell, donor_of_cell = type_of_cell[order], donor_of_cell[order]
        group_of_cell = type_of_cell * n_samples + donor_of_cell
        own_log = type_log_reference if name == "reference" else type_log
        log_profiles = (
            own_log[:, None, :] + study_effect[None, None, :] + donor_effect[None, :, :]
        ).reshape(n_cell_types * n_samples, n_genes)
        log_profiles -= log_profiles.max(axis=1, keepdims=True)
        profiles = np.exp(log_profiles)
        profiles /= profiles.sum(axis=1, keepdims=True)
        library_size = mean_library * np.exp(
            study_rng.normal(-0.5 * library_size_log_sd**2, library_size_log_sd, size=n_cells)
        )
        studies.append(
            _Study(
                name, profiles, group_of_cell, type_of_cell, donor_of_cell, library_size, seed_study
            )
        )

    # --- truth ------------------------------------------------------------------------------
    truth_rows = []
    for t in range(n_cell_types):
        if not present_query[t]:  # a reference-only type: no query cluster, no truth row
            continue
        if scenario == "coarse_reference":
            truth_rows.append((type_names[t], lineage_names[lineage_of_type[t]], "parent"))
        elif not present_reference[t]:
            truth_rows.append((type_names[t], "", "absent"))
        else:
            truth_rows.append((type_names[t], type_names[t], "identical"))
    truth = pd.DataFrame(truth_rows, columns=["query_cluster", "reference_cluster", "relation"])
    cell_types = pd.DataFrame(
        {
            "cell_type": type_names,
            "lineage": [lineage_names[k] for k in lineage_of_type],
            "proportion_query": expected_props["query"],
            "proportion_reference": expected_props["reference"],
        }
    )
    params = {
        "scenario": scenario,
        "n_cell_types": n_cell_types,
        "n_lineages": n_lineages,
        "n_genes": n_genes,
        "mean_library_size": float(mean_library_size),
        "library_size_log_sd": float(library_size_log_sd),
        "n_markers_lineage": n_markers_lineage,
        "n_markers_type": n_markers_type,
        "marker_log_fold_change": np.array([lfc_low, lfc_high]),
        "baseline_log_sd": float(baseline_log_sd),
        "dispersion": float(dispersion),
        "donor_effect_sd": float(donor_effect_sd),
        "study_effect_sd": float(study_effect_sd),
        "type_imbalance": float(type_imbalance),
        "composition_log_sd": float(composition_log_sd),
        "missing_type": missing,
        "random_state": -1 if isinstance(random_state, np.random.Generator) else int(random_state),
    }
    if similarity:  # recorded only when set, so that default outputs stay as they were
        params["missing_type_similarity"] = float(similarity)
        params["missing_type_nearest"] = type_names[nearest]
    if divergence:
        params["marker_divergence"] = float(divergence)
    if n_reference_only:
        params["n_reference_only_types"] = int(n_reference_only)
        params["reference_only_types"] = ",".join(type_names[t] for t in reference_only)
    if mean_library_size_reference is not None:
        params["mean_library_size_reference"] = float(library_reference)
    if full_length:
        params["reference_protocol"] = reference_protocol
        params["gene_length_log_sd"] = float(gene_length_log_sd)
        params["pseudo_count_scale"] = float(pseudo_count_scale)
        seed_lengths, seed_fragments = seed_protocol.spawn(2)
        gene_length = _gene_lengths(n_genes, gene_length_log_sd, seed_lengths)

    # --- counts and AnnData -------------------------------------------------------------------
    var = pd.DataFrame(index=pd.Index(gene_names, dtype=object))
    out = []
    libraries = (mean_library_size, library_reference)
    for study, n_samples, mean_library in zip(
        studies, (n_samples_query, n_samples_reference), libraries, strict=True
    ):
        X = _sample_counts(study, phi, _POISSON_THRESHOLD / mean_library)
        study_var = var.copy()
        if study.name == "reference" and full_length:
            X = _full_length_counts(X, gene_length, pseudo_count_scale, seed_fragments)
            study_var["gene_length"] = gene_length
        fine = pd.Categorical.from_codes(study.type_of_cell, categories=type_names)
        lineage = pd.Categorical.from_codes(
            lineage_of_type[study.type_of_cell], categories=lineage_names
        )
        if study.name == "reference" and scenario == "coarse_reference":
            label = lineage
        else:
            label = fine.remove_unused_categories()
        samples = [f"{study.name}_donor{d + 1}" for d in range(n_samples)]
        obs = pd.DataFrame(
            {
                "cell_type": label,
                "sample_id": pd.Categorical.from_codes(study.donor_of_cell, categories=samples),
                "cell_type_fine": fine.remove_unused_categories(),
                "lineage": lineage,
            },
            index=pd.Index([f"{study.name}_cell{i + 1}" for i in range(X.shape[0])], dtype=object),
        )
        uns = {
            "simulation": {
                "truth": truth.copy(),
                "cell_types": cell_types.copy(),
                "markers": markers.copy(),
                "params": {**params, "study": study.name},
            }
        }
        if moved is not None:
            uns["simulation"]["moved_markers"] = moved.copy()
        out.append(ad.AnnData(X=X, obs=obs, var=study_var, uns=uns))
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
# the program of types (shared with simulate_atlas)


def _hierarchy(
    n_cell_types: int, n_lineages: int, n_genes: int
) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """The lineage of each type (contiguous, as even as possible), lineage names ``L1``...,
    type names ``L1_T1``... and gene names (``GENE00001``... then the uninformative genes)."""
    lineage_of_type = np.concatenate(
        [
            np.full(len(part), k)
            for k, part in enumerate(np.array_split(np.arange(n_cell_types), n_lineages))
        ]
    )
    lineage_names = [f"L{k + 1}" for k in range(n_lineages)]
    type_names = []
    for k in range(n_lineages):
        members = np.flatnonzero(lineage_of_type == k)
        type_names += [f"L{k + 1}_T{j + 1}" for j in range(len(members))]
    n_regular = n_genes - len(UNINFORMATIVE_GENES)
    width = max(5, len(str(n_regular)))
    gene_names = [f"GENE{i + 1:0{width}d}" for i in range(n_regular)] + list(UNINFORMATIVE_GENES)
    return lineage_of_type, lineage_names, type_names, gene_names


def _programs(
    rng: np.random.Generator,
    lineage_of_type: np.ndarray,
    lineage_names: list[str],
    type_names: list[str],
    gene_names: list[str],
    *,
    n_markers_lineage: int,
    n_markers_type: int,
    lfc_range: tuple[float, float],
    baseline_log_sd: float,
    mean_library_size: float,
    dispersion: float,
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """The types' log-profiles before batch effects ``(n_types, n_genes)``, the ``markers``
    table and the per-gene dispersions, drawn from ``rng`` (the model of
    :func:`simulate_pair`'s Notes)."""
    n_genes = len(gene_names)
    n_uninformative = len(UNINFORMATIVE_GENES)
    n_regular = n_genes - n_uninformative
    n_cell_types = lineage_of_type.size
    n_lineages = len(lineage_names)
    n_program_genes = n_lineages * n_markers_lineage + n_cell_types * n_markers_type
    # --- gene baseline and programs ----------------------------------------------------------
    # the upper tail is clipped at 3.5 sd so that no single gene dominates the library
    baseline = np.minimum(rng.normal(0.0, baseline_log_sd, size=n_genes), 3.5 * baseline_log_sd)
    # uninformative genes are among the highly expressed ones (as MT- and RP genes are)
    baseline[n_regular:] = baseline_log_sd * 3.0 + rng.uniform(-1.5, 0.5, size=n_uninformative)
    # Markers come from genes detected at >= 0.1 UMI per cell on average before up-regulation
    # (at the mean library size), so that their fold changes survive log1p of normalized
    # pseudobulk; the top 1% of genes, which dominate libraries, are left out. Should too few
    # genes qualify, the highest-baseline ones below that top 1% are used.
    share = np.exp(baseline - baseline.max())
    share /= share.sum()
    by_level = np.argsort(-baseline[:n_regular], kind="stable")
    by_level = by_level[n_regular // 100 :]
    pool = by_level[share[by_level] * mean_library_size >= _MARKER_MIN_MEAN]
    if pool.size < n_program_genes:
        pool = by_level[: 2 * n_program_genes]
    if pool.size < n_program_genes:
        pool = np.arange(n_regular)
    program_genes = rng.choice(pool, size=n_program_genes, replace=False)
    effects = rng.uniform(*lfc_range, size=n_program_genes)
    type_log = np.tile(baseline, (n_cell_types, 1))
    marker_rows = []
    pos = 0
    for k in range(n_lineages):
        genes = program_genes[pos : pos + n_markers_lineage]
        eff = effects[pos : pos + n_markers_lineage]
        pos += n_markers_lineage
        type_log[np.ix_(lineage_of_type == k, genes)] += eff
        marker_rows += [
            (gene_names[g], lineage_names[k], "lineage", e) for g, e in zip(genes, eff, strict=True)
        ]
    for t in range(n_cell_types):
        genes = program_genes[pos : pos + n_markers_type]
        eff = effects[pos : pos + n_markers_type]
        pos += n_markers_type
        type_log[t, genes] += eff
        marker_rows += [
            (gene_names[g], type_names[t], "cell_type", e) for g, e in zip(genes, eff, strict=True)
        ]
    markers = pd.DataFrame(marker_rows, columns=["gene", "program", "level", "log_fold_change"])
    phi = np.minimum(dispersion * np.exp(rng.normal(0.0, _DISPERSION_LOG_SD, size=n_genes)), 1.0)
    return type_log, markers, phi


# ---------------------------------------------------------------------------------------------
# count sampling


def _sample_counts(study: _Study, phi: np.ndarray, p_threshold: float) -> sp.csr_matrix:
    """Draw a study's counts chunk by chunk and assemble one CSR matrix (float32)."""
    n_cells = study.group_of_cell.size
    n_genes = study.profiles.shape[1]
    starts = range(0, n_cells, _CHUNK_SIZE)
    seeds = study.seed.spawn(len(starts))
    inv_phi = (1.0 / phi).astype(np.float32)
    phi32 = phi.astype(np.float32)
    # The matrix is written into buffers allocated once at the size expected from the first
    # chunk's density (+2%; untouched pages cost no memory), grown in place if needed
    # (ndarray.resize -> realloc, which remaps the pages of a large block instead of copying)
    # and trimmed at the end: the peak memory stays near one copy of the final matrix.
    # Column indices always fit in int32; they become int64 only if nnz does not.
    data = np.empty(0, dtype=np.float32)
    indices = np.empty(0, dtype=np.int32)
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    pos = 0
    for start, seed in zip(starts, seeds, strict=True):
        stop = min(start + _CHUNK_SIZE, n_cells)
        nnz_per_row, idx, val = _sample_chunk(
            study.profiles,
            study.group_of_cell[start:stop],
            study.library_size[start:stop],
            inv_phi,
            phi32,
            p_threshold,
            seed,
        )
        if pos + idx.size > data.size:
            capacity = max(pos + idx.size, int(1.02 * (pos + idx.size) / stop * n_cells) + 1)
            if pos == 0:
                data = np.empty(capacity, dtype=np.float32)
                indices = np.empty(capacity, dtype=np.int32)
            else:
                data.resize(capacity, refcheck=False)
                indices.resize(capacity, refcheck=False)
        indptr[start + 1 : stop + 1] = pos + np.cumsum(nnz_per_row)
        indices[pos : pos + idx.size] = idx
        data[pos : pos + val.size] = val
        pos += idx.size
    data.resize(pos, refcheck=False)
    indices.resize(pos, refcheck=False)
    if pos <= np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    else:  # pragma: no cover - more than 2**31 non-zeros in one study
        indices = indices.astype(np.int64)
    return sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes), copy=False)


def _sample_chunk(
    profiles: np.ndarray,
    groups: np.ndarray,
    library_size: np.ndarray,
    inv_phi: np.ndarray,
    phi: np.ndarray,
    p_threshold: float,
    seed: np.random.SeedSequence,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of one chunk of cells: (non-zeros per row, column indices, values), CSR order.

    Genes with proportion >= ``p_threshold`` in some group of the chunk ("dense" genes) get a
    gamma-Poisson draw per (cell, gene). For the others the counts are Poisson: per (group,
    gene), the total over the group's cells is drawn from Poisson(p * sum of library sizes)
    and each count is assigned to a cell with probability proportional to its library size,
    which gives independent Poisson(L_i * p) counts per cell (Poisson splitting) at a cost
    proportional to the number of counts.
    """
    rng = np.random.default_rng(seed)
    n_cells = groups.size
    n_genes = profiles.shape[1]
    present, local = np.unique(groups, return_inverse=True)
    sub = profiles[present]  # (n_groups_in_chunk, n_genes)
    dense_mask = sub.max(axis=0) >= p_threshold
    dense = np.flatnonzero(dense_mask)
    sparse = np.flatnonzero(~dense_mask)

    # dense genes: gamma-Poisson per (cell, gene); np.nonzero is row-major and ``dense`` is
    # sorted, so this part is already a canonical CSR matrix
    lam = sub[:, dense].astype(np.float32)[local]  # (n_cells, n_dense)
    lam *= library_size.astype(np.float32)[:, None]
    lam *= phi[dense]
    lam *= rng.standard_gamma(inv_phi[dense], size=lam.shape, dtype=np.float32)
    counts = rng.poisson(lam)
    del lam
    rows_d, cols_d = np.nonzero(counts)
    vals_d = counts[rows_d, cols_d].astype(np.float32)
    del counts
    indptr_d = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows_d, minlength=n_cells), out=indptr_d[1:])
    part_dense = sp.csr_matrix(
        (vals_d, dense[cols_d].astype(np.int32), indptr_d), shape=(n_cells, n_genes)
    )

    # sparse genes: Poisson totals per (group, gene), split over the group's cells
    order = np.argsort(local, kind="stable")
    cum_lib = np.cumsum(library_size[order])
    group_size = np.bincount(local, minlength=present.size)
    group_end = np.cumsum(group_size)
    group_start = group_end - group_size
    lib_before = np.concatenate([[0.0], cum_lib])[group_start]
    group_lib = cum_lib[group_end - 1] - lib_before
    totals = rng.poisson(sub[:, sparse] * group_lib[:, None])
    grp, gene = np.nonzero(totals)
    reps = totals[grp, gene]
    del totals
    grp = np.repeat(grp, reps)
    cols_s = np.repeat(sparse[gene], reps)
    target = lib_before[grp] + rng.random(grp.size) * group_lib[grp]
    pos = _search_right(cum_lib, target)
    np.clip(pos, group_start[grp], group_end[grp] - 1, out=pos)
    part_sparse = sp.coo_matrix(
        (np.ones(pos.size, dtype=np.float32), (order[pos], cols_s)), shape=(n_cells, n_genes)
    ).tocsr()  # sums duplicates, sorts indices
    mat = part_dense + part_sparse  # two canonical matrices with disjoint columns: a merge
    return np.diff(mat.indptr), mat.indices, mat.data


def _search_right(cum: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``np.searchsorted(cum, target, side="right")`` for a short increasing ``cum`` and many
    targets in ``[0, cum[-1]]``, via a guide table (Chen & Asau): a few vectorized passes
    instead of a branchy binary search per target."""
    n = cum.size
    n_buckets = 8 * n
    scale = n_buckets / cum[-1]
    guide = np.searchsorted(cum, np.arange(n_buckets + 1) / scale, side="right")
    pos = guide[np.minimum((target * scale).astype(np.int64), n_buckets)]
    cum_ext = np.concatenate([[-np.inf], cum, [np.inf]])  # cum_ext[k + 1] == cum[k]
    active = np.flatnonzero(cum_ext[pos + 1] <= target)
    while active.size:
        pos[active] += 1
        active = active[cum_ext[pos[active] + 1] <= target[active]]
    # guard against a bucket index rounded up: step back while cum[pos - 1] > target
    active = np.flatnonzero(cum_ext[pos] > target)
    while active.size:
        pos[active] -= 1
        active = active[cum_ext[pos[active]] > target[active]]
    return pos


# ---------------------------------------------------------------------------------------------
# opt-in regimes: reference-only types, full-length protocol


def _reference_only_types(
    n: int,
    lineage_of_type: np.ndarray,
    present_reference: np.ndarray,
    seed: np.random.SeedSequence | None,
) -> np.ndarray:
    """``n`` types only the reference holds, drawn from their own stream: in a random order of
    the types the reference holds, a type is taken while its lineage keeps another query type;
    then, if fewer than ``n`` were taken, the next ones in that order."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(np.flatnonzero(present_reference))
    in_query = np.ones(lineage_of_type.size, dtype=bool)
    chosen = []
    for t in order:
        lineage = lineage_of_type == lineage_of_type[t]
        if len(chosen) < n and (in_query & lineage).sum() >= 2:
            chosen.append(int(t))
            in_query[t] = False
    for t in order:
        if len(chosen) < n and in_query[t]:
            chosen.append(int(t))
            in_query[t] = False
    return np.sort(np.array(chosen, dtype=np.int64))


def _move_markers(
    type_log: np.ndarray,
    markers: pd.DataFrame,
    type_names: list[str],
    gene_names: list[str],
    share: float,
    n_markers_type: int,
    seed: np.random.SeedSequence,
) -> tuple[np.ndarray, pd.DataFrame]:
    """The reference's log-profiles with ``round(share * n_markers_type)`` of each type's own
    program genes moved to another type drawn at random, and the table of moves."""
    rng = np.random.default_rng(seed)
    moved_log = type_log.copy()
    n_move = int(round(share * n_markers_type))
    gene_index = {g: i for i, g in enumerate(gene_names)}
    rows = []
    own = markers[markers["level"] == "cell_type"]
    for t, name in enumerate(type_names):
        program = own[own["program"] == name]
        if n_move == 0 or program.empty:
            continue
        pick = rng.choice(len(program), size=min(n_move, len(program)), replace=False)
        for k in np.sort(pick):
            gene, effect = program["gene"].iloc[k], float(program["log_fold_change"].iloc[k])
            target = int(rng.choice([u for u in range(len(type_names)) if u != t]))
            g = gene_index[gene]
            moved_log[t, g] -= effect
            moved_log[target, g] += effect
            rows.append((gene, name, type_names[target], effect))
    columns = ["gene", "from_type", "to_type", "log_fold_change"]
    return moved_log, pd.DataFrame(rows, columns=columns)


def _gene_lengths(n_genes: int, log_sd: float, seed: np.random.SeedSequence) -> np.ndarray:
    """Gene lengths in bp: ``2000 * LogNormal(0, log_sd)`` clipped to [200, 50,000]."""
    rng = np.random.default_rng(seed)
    lengths = _MEDIAN_GENE_LENGTH * np.exp(rng.normal(0.0, log_sd, size=n_genes))
    return np.clip(lengths, *_GENE_LENGTH_BOUNDS)


def _full_length_counts(
    molecules: sp.csr_matrix,
    gene_length: np.ndarray,
    scale: float,
    seed: np.random.SeedSequence,
) -> sp.csr_matrix:
    """Full-length reads of the captured ``molecules`` as ``round(scale * RPKM)`` (float64).

    Each molecule of gene ``g`` yields ``Poisson(2 * len_g / 2000)`` fragments (a sum of
    Poisson draws is one Poisson draw, so a cell's ``m`` molecules give
    ``Poisson(m * 2 * len_g / 2000)``), and ``RPKM_g = fragments_g / (len_g / 1e3) /
    (total fragments of the cell / 1e6)``.
    """
    rng = np.random.default_rng(seed)
    X = molecules.tocsr().astype(np.float64)
    rate = _FRAGMENTS_PER_MOLECULE * gene_length / _MEDIAN_GENE_LENGTH
    X.data = rng.poisson(X.data * rate[X.indices]).astype(np.float64)
    totals = np.asarray(X.sum(axis=1)).ravel()
    row = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    with np.errstate(divide="ignore", invalid="ignore"):
        rpkm = X.data / (gene_length[X.indices] / 1e3) / (totals[row] / 1e6)
    X.data = np.round(scale * np.nan_to_num(rpkm))
    X.eliminate_zeros()
    return X


# ---------------------------------------------------------------------------------------------
# helpers


def _nearest_type(type_log: np.ndarray, lineage_of_type: np.ndarray, t: int) -> int:
    """The type whose log-profile is closest (Euclidean) to type ``t``'s, among its siblings
    (same lineage) if it has any, else among all other types; ties to the lowest index."""
    others = np.flatnonzero(np.arange(lineage_of_type.size) != t)
    siblings = others[lineage_of_type[others] == lineage_of_type[t]]
    pool = siblings if siblings.size else others
    gaps = np.linalg.norm(type_log[pool] - type_log[t], axis=1)
    return int(pool[np.argmin(gaps)])


def _allocate(n_cells: int, prop: np.ndarray, min_cells: int) -> np.ndarray:
    """Cells per type: proportional to ``prop`` (largest remainder), at least ``min_cells``
    for every type with ``prop > 0``, summing to ``n_cells``."""
    present = prop > 0
    n = np.zeros(prop.size, dtype=np.int64)
    n[present] = min_cells
    rest = n_cells - n.sum()
    share = prop * rest
    extra = np.floor(share).astype(np.int64)
    remainder = rest - extra.sum()
    if remainder > 0:
        extra[np.argsort(-(share - extra), kind="stable")[:remainder]] += 1
    return n + extra


def _seed_sequence(random_state: int | np.random.Generator) -> np.random.SeedSequence:
    if isinstance(random_state, np.random.Generator):
        return np.random.SeedSequence(int(random_state.integers(2**63)))
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer):
        msg = (
            f"random_state must be an int or a numpy.random.Generator, got {random_state!r}; "
            "pass e.g. random_state=0."
        )
        raise ValueError(msg)
    if random_state < 0:
        msg = f"random_state must be >= 0, got {random_state}; pass a non-negative seed."
        raise ValueError(msg)
    return np.random.SeedSequence(int(random_state))


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        msg = (
            f"{name} must be an integer >= {minimum}, got {value!r}; pass an integer "
            f"{name} >= {minimum}."
        )
        raise ValueError(msg)


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        msg = f"{name} must be a positive number, got {value!r}; pass a value > 0."
        raise ValueError(msg)


def _check_nonnegative(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        msg = f"{name} must be a number >= 0, got {value!r}; pass a value >= 0 (0 turns it off)."
        raise ValueError(msg)


def _check_lfc_range(value: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        low, high = math.nan, math.nan
    if not (0 < low <= high):
        msg = (
            f"marker_log_fold_change must be a pair (low, high) with 0 < low <= high, got "
            f"{value!r}; pass e.g. (1.5, 3.0)."
        )
        raise ValueError(msg)
    return low, high
