"""Simulated atlases: several annotated studies drawn from one program of cell types.

The studies share :func:`~pairot.datasets.simulate_pair`'s model (the lineage and type
programs, the negative-binomial counts, donor and study effects, drawn by the same helpers);
what differs between them is how they annotate it: some name the fine subtypes, others only
the lineages (for all or some lineages), each lacks a few types and may hold a type no other
study has. The truth is one row per finest type with each study's label for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .._atlas_table import NONE
from ._simulate import (
    _POISSON_THRESHOLD,
    UNINFORMATIVE_GENES,
    _allocate,
    _check_int,
    _check_lfc_range,
    _check_nonnegative,
    _check_positive,
    _hierarchy,
    _programs,
    _sample_counts,
    _seed_sequence,
    _Study,
)

__all__ = ["simulate_atlas", "GRANULARITIES", "NONE"]

#: The granularities a study may have (``simulate_atlas(granularity=...)``).
GRANULARITIES: tuple[str, ...] = ("fine", "mixed", "coarse")
# Concentration of the Dirichlet that draws donor proportions within a study.
_DONOR_CONCENTRATION = 10.0


def simulate_atlas(
    n_studies: int = 5,
    n_cells: int | Sequence[int] = 2000,
    n_genes: int = 2000,
    *,
    n_cell_types: int = 12,
    n_lineages: int | None = None,
    granularity: Sequence[str] | None = None,
    n_missing_types: int = 1,
    n_unique_types: int = 1,
    n_samples: int = 4,
    mean_library_size: float = 2000.0,
    library_size_log_sd: float = 0.4,
    n_markers_lineage: int = 25,
    n_markers_type: int = 20,
    marker_log_fold_change: tuple[float, float] = (1.5, 3.0),
    baseline_log_sd: float = 2.2,
    dispersion: float = 0.2,
    donor_effect_sd: float = 0.1,
    study_effect_sd: float = 0.2,
    type_imbalance: float = 5.0,
    composition_log_sd: float = 0.3,
    min_cells_per_type: int | None = None,
    random_state: int | np.random.Generator = 0,
) -> tuple[dict[str, ad.AnnData], pd.DataFrame]:
    """Simulate an atlas of studies that annotate one program of cell types differently.

    Parameters
    ----------
    n_studies
        Number of studies (>= 2), named ``"S1"``, ``"S2"``, ...
    n_cells
        Cells per study: one number for all, or one per study.
    n_genes
        Number of genes, including :data:`~pairot.datasets.UNINFORMATIVE_GENES`.
    n_cell_types
        Number of finest cell types (subtypes) of the program (>= 2), named ``L1_T1``, ...
        and split contiguously into ``n_lineages`` lineages ``L1``, ...
    n_lineages
        Default ``max(2, round(sqrt(n_cell_types)))``, capped at ``n_cell_types``.
    granularity
        One of :data:`GRANULARITIES` per study: ``"fine"`` labels every cell with its
        subtype; ``"coarse"`` labels every lineage with its lineage name; ``"mixed"`` labels
        a random half of the lineages (``ceil(n_lineages / 2)``) coarsely and the others by
        subtype. Default: ``("fine", "mixed", "coarse")`` repeated over the studies. A unique
        type (below) is always labelled by its own name.
    n_missing_types
        Per study, how many of the shared types it lacks (no cells), drawn at random among
        the types that then remain in at least two studies.
    n_unique_types
        How many of the ``n_cell_types`` types are held by one study only (a type of its
        own, assigned to the studies in a random order, one after another).
    n_samples
        Donors per study (``sample_id`` values ``"S1_donor1"``, ...; no donor is shared).
    mean_library_size, library_size_log_sd, n_markers_lineage, n_markers_type, \
marker_log_fold_change, baseline_log_sd, dispersion, donor_effect_sd, study_effect_sd, \
type_imbalance, composition_log_sd
        As in :func:`~pairot.datasets.simulate_pair`; every study has its own study effect,
        donor effects and composition. Few (``n_markers_type``) and weak
        (``marker_log_fold_change``) type markers make subtypes of one lineage hard to tell
        apart; the lineage programs (``n_markers_lineage``) keep lineages apart.
    min_cells_per_type
        Each type present in a study gets at least this many cells (default ``5 *
        n_samples``).
    random_state
        Seed (``int``) or :class:`numpy.random.Generator`; the same seed gives the same atlas.

    Returns
    -------
    ``(studies, truth)``

    - ``studies``: study name -> :class:`anndata.AnnData` of raw counts (CSR, float32), with
      ``obs`` columns ``cell_type`` (the study's label: subtype, lineage or unique type),
      ``sample_id``, ``cell_type_fine`` (the subtype drawn) and ``lineage``, and
      ``uns["simulation"]`` holding ``truth``, ``markers`` and ``params`` (scalars);
    - ``truth``: one row per finest type of the program held by at least one study, columns
      ``cell_type`` (the finest type), ``lineage``, ``unique`` (held by one study only), then
      one per study: the study's label of that type's cells, or ``"NONE"`` where the study
      has none of them. Two labels of different studies are truly linked when they share a
      row (they hold cells of one finest type).

    Notes
    -----
    The program (gene baseline, lineage and type programs, dispersions) is that of
    :func:`~pairot.datasets.simulate_pair` for the same parameters; each study ``s`` then adds
    its own per-gene ``N(0, study_effect_sd)`` effect and per-donor ``N(0,
    donor_effect_sd)`` effects, draws its composition (a geometric series of ratio
    ``type_imbalance``, in one random order of the types for the whole atlas, with per-study
    log-normal noise) and its counts as ``simulate_pair`` does.
    """
    _check_int("n_studies", n_studies, 2)
    cells = _check_cells(n_cells, n_studies)
    _check_int("n_genes", n_genes, 1)
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
    levels = _check_granularity(granularity, n_studies)
    _check_int("n_missing_types", n_missing_types, 0)
    _check_int("n_unique_types", n_unique_types, 0)
    n_shared = n_cell_types - n_unique_types
    if n_shared < 2:
        msg = (
            f"n_unique_types={n_unique_types} leaves {n_shared} of n_cell_types={n_cell_types} "
            f"types shared by several studies; pass n_unique_types <= {n_cell_types - 2}."
        )
        raise ValueError(msg)
    if n_shared - n_missing_types < 2:
        msg = (
            f"n_missing_types={n_missing_types} leaves a study fewer than 2 of the {n_shared} "
            f"shared types; pass n_missing_types <= {n_shared - 2}."
        )
        raise ValueError(msg)
    _check_int("n_samples", n_samples, 1)
    _check_positive("mean_library_size", mean_library_size)
    _check_nonnegative("library_size_log_sd", library_size_log_sd)
    _check_int("n_markers_lineage", n_markers_lineage, 0)
    _check_int("n_markers_type", n_markers_type, 1)
    lfc_range = _check_lfc_range(marker_log_fold_change)
    _check_nonnegative("baseline_log_sd", baseline_log_sd)
    _check_positive("dispersion", dispersion)
    _check_nonnegative("donor_effect_sd", donor_effect_sd)
    _check_nonnegative("study_effect_sd", study_effect_sd)
    _check_nonnegative("composition_log_sd", composition_log_sd)
    if (
        isinstance(type_imbalance, bool)
        or not isinstance(type_imbalance, int | float)
        or not type_imbalance >= 1
    ):
        msg = f"type_imbalance must be a number >= 1, got {type_imbalance!r}; pass e.g. 5."
        raise ValueError(msg)
    if min_cells_per_type is not None:
        _check_int("min_cells_per_type", min_cells_per_type, 1)
    min_cells = 5 * n_samples if min_cells_per_type is None else min_cells_per_type
    n_program_genes = n_lineages * n_markers_lineage + n_cell_types * n_markers_type
    n_uninformative = len(UNINFORMATIVE_GENES)
    if n_genes < n_uninformative + n_program_genes:
        msg = (
            f"n_genes={n_genes} is too small for {n_lineages} lineage programs of "
            f"{n_markers_lineage} genes, {n_cell_types} type programs of {n_markers_type} "
            f"genes and {n_uninformative} uninformative genes; pass n_genes >= "
            f"{math.ceil(1.4 * (n_uninformative + n_program_genes))} or fewer markers."
        )
        raise ValueError(msg)
    # a study holds at most all shared types plus the unique ones it is given
    most_types = n_shared - n_missing_types + math.ceil(n_unique_types / n_studies)
    for s, n in enumerate(cells):
        if n < most_types * min_cells:
            msg = (
                f"n_cells={n} for study S{s + 1} is too small for up to {most_types} cell "
                f"types with at least {min_cells} cells each; pass n_cells >= "
                f"{most_types * min_cells} or lower min_cells_per_type."
            )
            raise ValueError(msg)

    seed = _seed_sequence(random_state)
    seed_model, seed_design, *seed_studies = seed.spawn(2 + n_studies)
    rng = np.random.default_rng(seed_model)
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
        lfc_range=lfc_range,
        baseline_log_sd=baseline_log_sd,
        mean_library_size=mean_library_size,
        dispersion=dispersion,
    )
    ranks = rng.permutation(n_cell_types)
    base_prop = type_imbalance ** (-ranks / (n_cell_types - 1))
    base_prop /= base_prop.sum()

    names = [f"S{s + 1}" for s in range(n_studies)]
    present, coarse = _design(
        np.random.default_rng(seed_design),
        lineage_of_type,
        levels,
        n_missing_types,
        n_unique_types,
    )
    unique = present.sum(axis=0) == 1

    # the label of each type in each study: its own name, or its lineage's where the study
    # annotates that lineage coarsely (never for a unique type)
    labels = np.empty((n_studies, n_cell_types), dtype=object)
    for s in range(n_studies):
        for t in range(n_cell_types):
            coarse_here = coarse[s, lineage_of_type[t]] and not unique[t]
            label = lineage_names[lineage_of_type[t]] if coarse_here else type_names[t]
            labels[s, t] = label if present[s, t] else NONE
    held = present.any(axis=0)
    truth = pd.DataFrame(
        {
            "cell_type": [type_names[t] for t in np.flatnonzero(held)],
            "lineage": [lineage_names[lineage_of_type[t]] for t in np.flatnonzero(held)],
            "unique": unique[held],
            **{name: list(labels[s, held]) for s, name in enumerate(names)},
        }
    )
    params = {
        "n_studies": n_studies,
        "n_genes": n_genes,
        "n_cell_types": n_cell_types,
        "n_lineages": n_lineages,
        "n_missing_types": n_missing_types,
        "n_unique_types": n_unique_types,
        "n_samples": n_samples,
        "mean_library_size": float(mean_library_size),
        "n_markers_lineage": n_markers_lineage,
        "n_markers_type": n_markers_type,
        "marker_log_fold_change": np.array(lfc_range),
        "dispersion": float(dispersion),
        "donor_effect_sd": float(donor_effect_sd),
        "study_effect_sd": float(study_effect_sd),
        "type_imbalance": float(type_imbalance),
        "composition_log_sd": float(composition_log_sd),
        "random_state": -1 if isinstance(random_state, np.random.Generator) else int(random_state),
    }

    var = pd.DataFrame(index=pd.Index(gene_names, dtype=object))
    studies = {}
    for s, name in enumerate(names):
        # model stream: the study's effects and composition; own stream: its cells
        study_effect = rng.normal(0.0, study_effect_sd, size=n_genes)
        donor_effect = rng.normal(0.0, donor_effect_sd, size=(n_samples, n_genes))
        donor_prop = rng.dirichlet(np.full(n_samples, _DONOR_CONCENTRATION))
        noise = np.exp(rng.normal(0.0, composition_log_sd, size=n_cell_types))
        prop = base_prop * noise * present[s]
        prop /= prop.sum()
        n_per_type = _allocate(cells[s], prop, min_cells)
        study_rng = np.random.default_rng(seed_studies[s].spawn(1)[0])
        type_of_cell = np.repeat(np.arange(n_cell_types), n_per_type)
        donor_of_cell = study_rng.choice(n_samples, size=cells[s], p=donor_prop)
        order = np.lexsort((study_rng.permutation(cells[s]), donor_of_cell))
        type_of_cell, donor_of_cell = type_of_cell[order], donor_of_cell[order]
        log_profiles = (
            type_log[:, None, :] + study_effect[None, None, :] + donor_effect[None, :, :]
        ).reshape(n_cell_types * n_samples, n_genes)
        log_profiles -= log_profiles.max(axis=1, keepdims=True)
        profiles = np.exp(log_profiles)
        profiles /= profiles.sum(axis=1, keepdims=True)
        library_size = mean_library_size * np.exp(
            study_rng.normal(-0.5 * library_size_log_sd**2, library_size_log_sd, size=cells[s])
        )
        study = _Study(
            name,
            profiles,
            type_of_cell * n_samples + donor_of_cell,
            type_of_cell,
            donor_of_cell,
            library_size,
            seed_studies[s],
        )
        X = _sample_counts(study, phi, _POISSON_THRESHOLD / mean_library_size)
        own_labels = list(dict.fromkeys(x for x in labels[s] if x != NONE))
        samples = [f"{name}_donor{d + 1}" for d in range(n_samples)]
        obs = pd.DataFrame(
            {
                "cell_type": pd.Categorical(labels[s][type_of_cell], categories=own_labels),
                "sample_id": pd.Categorical.from_codes(donor_of_cell, categories=samples),
                "cell_type_fine": pd.Categorical.from_codes(
                    type_of_cell, categories=type_names
                ).remove_unused_categories(),
                "lineage": pd.Categorical.from_codes(
                    lineage_of_type[type_of_cell], categories=lineage_names
                ),
            },
            index=pd.Index([f"{name}_cell{i + 1}" for i in range(cells[s])], dtype=object),
        )
        uns = {
            "simulation": {
                "truth": truth.copy(),
                "markers": markers.copy(),
                "params": {**params, "study": name, "granularity": levels[s]},
            }
        }
        studies[name] = ad.AnnData(X=X, obs=obs, var=var.copy(), uns=uns)
    return studies, truth


def _design(
    rng: np.random.Generator,
    lineage_of_type: np.ndarray,
    levels: list[str],
    n_missing: int,
    n_unique: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Which types each study holds ``(n_studies, n_types)`` and which lineages it labels
    coarsely ``(n_studies, n_lineages)``."""
    n_studies, n_types = len(levels), lineage_of_type.size
    n_lineages = int(lineage_of_type.max()) + 1
    unique_types = rng.choice(n_types, size=n_unique, replace=False)
    present = np.ones((n_studies, n_types), dtype=bool)
    owners = rng.permutation(n_studies)
    for k, t in enumerate(unique_types):
        present[:, t] = False
        present[owners[k % n_studies], t] = True
    shared = np.setdiff1d(np.arange(n_types), unique_types)
    for s in range(n_studies):
        # a type may go missing here only while at least two other studies keep it
        candidates = shared[present[:, shared].sum(axis=0) >= 3]
        take = min(n_missing, candidates.size)
        present[s, rng.choice(candidates, size=take, replace=False)] = False
    coarse = np.zeros((n_studies, n_lineages), dtype=bool)
    for s, level in enumerate(levels):
        if level == "coarse":
            coarse[s] = True
        elif level == "mixed":
            pick = rng.choice(n_lineages, size=math.ceil(n_lineages / 2), replace=False)
            coarse[s, pick] = True
    return present, coarse


def _check_cells(n_cells: int | Sequence[int], n_studies: int) -> list[int]:
    if isinstance(n_cells, int | np.integer) and not isinstance(n_cells, bool):
        _check_int("n_cells", n_cells, 1)
        return [int(n_cells)] * n_studies
    values = list(n_cells) if isinstance(n_cells, Sequence) else None
    if values is None or len(values) != n_studies:
        msg = (
            f"n_cells must be an integer or a sequence of {n_studies} integers (one per "
            f"study), got {n_cells!r}; pass e.g. n_cells=2000."
        )
        raise ValueError(msg)
    for value in values:
        _check_int("n_cells", value, 1)
    return [int(v) for v in values]


def _check_granularity(granularity: Sequence[str] | None, n_studies: int) -> list[str]:
    if granularity is None:
        return [GRANULARITIES[s % len(GRANULARITIES)] for s in range(n_studies)]
    values = None if isinstance(granularity, str) else list(granularity)
    if values is None or len(values) != n_studies or any(v not in GRANULARITIES for v in values):
        msg = (
            f"granularity must be a sequence of {n_studies} values (one per study) among "
            f"{GRANULARITIES}, got {granularity!r}; pass e.g. "
            f"{[GRANULARITIES[s % 3] for s in range(n_studies)]}, or None for that default."
        )
        raise ValueError(msg)
    return values
