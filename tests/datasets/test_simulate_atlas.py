"""``simulate_atlas``: the truth table agrees with the labels actually drawn, seeds reproduce,
the program is ``simulate_pair``'s, and bad arguments get clear errors."""

import numpy as np
import pandas as pd
import pytest

from pairot.datasets import simulate_atlas, simulate_pair

TINY = {"n_cells": 400, "n_genes": 400, "n_cell_types": 6, "n_markers_type": 5, "n_samples": 2}


@pytest.fixture(scope="module")
def atlas():
    return simulate_atlas(
        4,
        granularity=["fine", "mixed", "coarse", "fine"],
        n_missing_types=1,
        n_unique_types=2,
        random_state=7,
        **TINY,
    )


def test_truth_agrees_with_the_labels_drawn(atlas):
    studies, truth = atlas
    assert list(truth["cell_type"]) == sorted(truth["cell_type"])
    fine_of_study = {}
    for name, adata in studies.items():
        obs = adata.obs.astype(str)
        fine_of_study[name] = set(obs["cell_type_fine"])
        for _, row in truth.iterrows():
            cells = obs["cell_type_fine"] == row["cell_type"]
            if row[name] == "NONE":  # a missing type has no cells
                assert not cells.any()
                continue
            # the type's cells all carry the study's label for it
            assert cells.any()
            assert set(obs.loc[cells, "cell_type"]) == {row[name]}
        # a label covers exactly the cells of the finest types whose rows name it
        for label in set(obs["cell_type"]):
            covered = set(truth.loc[truth[name] == label, "cell_type"])
            assert set(obs.loc[obs["cell_type"] == label, "cell_type_fine"]) == covered
            if label.count("_") == 0:  # a lineage label covers subtypes of that lineage only
                assert set(truth.loc[truth[name] == label, "lineage"]) == {label}
    # a unique type is in exactly one study; every shared type in at least two
    holders = truth[list(studies)].ne("NONE").sum(axis=1)
    assert (holders[truth["unique"]] == 1).all()
    assert (holders[~truth["unique"]] >= 2).all()
    assert truth["unique"].sum() == 2
    # granularity: the fine study names subtypes, the coarse one lineages (unique types aside)
    shared = truth[~truth["unique"]]
    for name, kind in zip(studies, ["fine", "mixed", "coarse", "fine"], strict=True):
        present = shared[shared[name] != "NONE"]
        is_lineage = present[name] == present["lineage"]
        if kind == "fine":
            assert not is_lineage.any()
        elif kind == "coarse":
            assert is_lineage.all()
        else:
            assert is_lineage.any() and not is_lineage.all()
        assert (truth[name] != "NONE").sum() == len(fine_of_study[name])
    # each study misses exactly one shared type
    assert (shared[list(studies)] == "NONE").sum().tolist() == [1, 1, 1, 1]


def test_seeds_reproduce_and_the_program_is_simulate_pairs(atlas):
    studies, truth = atlas
    again, truth_again = simulate_atlas(
        4,
        granularity=["fine", "mixed", "coarse", "fine"],
        n_missing_types=1,
        n_unique_types=2,
        random_state=7,
        **TINY,
    )
    pd.testing.assert_frame_equal(truth, truth_again)
    for name in studies:
        assert (studies[name].X != again[name].X).nnz == 0
        pd.testing.assert_frame_equal(studies[name].obs, again[name].obs)
    other, _ = simulate_atlas(4, random_state=8, **TINY)
    assert (other["S1"].X != studies["S1"].X).nnz > 0
    # the same parameters draw the same programs (markers) as simulate_pair
    _, ref = simulate_pair(
        400,
        400,
        400,
        n_cell_types=6,
        n_markers_type=5,
        type_imbalance=5.0,
        random_state=np.random.default_rng(1),
    )
    from_atlas, _ = simulate_atlas(2, random_state=np.random.default_rng(1), **TINY)
    pd.testing.assert_frame_equal(
        ref.uns["simulation"]["markers"], from_atlas["S1"].uns["simulation"]["markers"]
    )


def test_counts_and_donors(atlas):
    studies, _ = atlas
    for name, adata in studies.items():
        X = adata.X
        assert X.dtype == np.float32 and (X.data > 0).all()
        np.testing.assert_array_equal(X.data, np.round(X.data))
        assert set(adata.obs["sample_id"]) == {f"{name}_donor1", f"{name}_donor2"}
        # every type present gets at least 5 * n_samples cells
        assert adata.obs["cell_type_fine"].value_counts().min() >= 10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_studies": 1}, "n_studies must be an integer >= 2"),
        ({"n_cells": [400, 400]}, "n_cells must be an integer or a sequence of 3"),
        ({"granularity": ["fine", "fine", "medium"]}, "granularity must be a sequence of 3"),
        ({"granularity": "fine"}, "granularity must be a sequence"),
        ({"n_unique_types": 5}, "n_unique_types=5 leaves 1"),
        ({"n_missing_types": 5}, "n_missing_types=5 leaves a study fewer than 2"),
        ({"n_cells": 20}, "n_cells=20 for study S1 is too small"),
        ({"n_genes": 50}, "n_genes=50 is too small"),
        ({"marker_log_fold_change": (2.0, 1.0)}, "marker_log_fold_change must be a pair"),
        ({"type_imbalance": 0.5}, "type_imbalance must be a number >= 1"),
        ({"random_state": -1}, "random_state must be >= 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {**TINY, "n_studies": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        simulate_atlas(**args)
