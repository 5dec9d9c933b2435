import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pairot.pp import downsample_indices


def naive_counts(labels):
    out = {}
    for label in labels:
        out[label] = out.get(label, 0) + 1
    return out


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.sampled_from(["a", "b/c", "T reg+", "ñ", "7"]), min_size=0, max_size=80),
    n_samples=st.integers(min_value=1, max_value=30),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_downsample_properties(labels, n_samples, seed):
    labels = np.asarray(labels, dtype=object)
    idx = downsample_indices(labels, n_samples, random_state=seed)
    assert idx.dtype.kind == "i"
    assert np.all(np.diff(idx) > 0)  # sorted, unique
    before = naive_counts(labels.tolist())
    after = naive_counts(labels[idx].tolist())
    # every label survives; a label keeps min(count, n_samples) cells
    assert set(after) == set(before)
    for label, count in before.items():
        assert after[label] == min(count, n_samples)
    # same seed, same answer
    np.testing.assert_array_equal(idx, downsample_indices(labels, n_samples, random_state=seed))


def test_downsample_is_seeded_and_uniform_within_label():
    labels = np.repeat(["x", "y"], [1000, 5])
    a = downsample_indices(labels, 10, random_state=1)
    b = downsample_indices(labels, 10, random_state=2)
    assert not np.array_equal(a, b)
    # every cell of the large label has the same chance: counts over many seeds are flat
    hits = np.zeros(1000)
    for seed in range(400):
        kept = downsample_indices(labels, 10, random_state=seed)
        hits[kept[kept < 1000]] += 1
    # expected 4 hits per cell; a chi-square-like bound that a biased sampler would fail
    assert hits.mean() == pytest.approx(4.0)
    assert hits[:500].sum() == pytest.approx(hits[500:].sum(), rel=0.1)


def test_downsample_accepts_series_and_categorical():
    labels = pd.Series(pd.Categorical(["b", "a", "b", "b"], categories=["a", "b", "unused"]))
    idx = downsample_indices(labels, 2, random_state=0)
    assert labels.iloc[idx].value_counts().to_dict() == {"a": 1, "b": 2, "unused": 0}


@pytest.mark.parametrize(
    ("n_samples", "error"), [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_downsample_bad_n_samples(n_samples, error):
    with pytest.raises(error, match="n_samples"):
        downsample_indices(["a", "b"], n_samples)


def test_downsample_rejects_missing_labels():
    with pytest.raises(ValueError, match="missing"):
        downsample_indices(np.array(["a", None, "b"], dtype=object), 2)
