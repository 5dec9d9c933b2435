"""Write the input matrices of the limma fixtures (run once; the outputs are committed).

Each fixture ``NAME`` gets ``NAME_expr.csv`` (genes x pseudobulk profiles, log1p of counts
normalized to 1e5 per profile; first column the gene name) and ``NAME_labels.csv`` (one row per
profile: ``profile,label`` with ``label`` the integer cluster code 0..K-1).

Usage, from the repository root: ``.venv/bin/python tests/data/limma/make_limma_inputs.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent


def _pseudobulk(rng: np.random.Generator, n_genes: int, sizes: list[int]) -> tuple:
    """Negative-binomial counts with cluster effects, normalized to 1e5 and log1p."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    n_profiles = labels.size
    base = rng.lognormal(mean=2.0, sigma=1.5, size=n_genes)
    # log2 fold changes of each cluster: most genes null, some markers
    lfc = np.where(
        rng.random((len(sizes), n_genes)) < 0.15, rng.normal(0, 2, (len(sizes), n_genes)), 0.0
    )
    sample_effect = rng.normal(0, 0.3, (n_profiles, n_genes))
    mu = base[None, :] * 2.0 ** (lfc[labels] + sample_effect)
    lib = rng.uniform(0.5, 3.0, n_profiles)[:, None]
    mu = mu * lib
    dispersion = 0.1
    n = 1.0 / dispersion
    counts = rng.negative_binomial(n, n / (n + mu))
    counts = counts.astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    expr = np.log1p(counts / totals * 1e5)
    return expr.T, labels  # genes x profiles


def _write(name: str, expr: np.ndarray, labels: np.ndarray) -> None:
    genes = [f"g{i:03d}" for i in range(expr.shape[0])]
    profiles = [f"p{j:02d}_c{lab}" for j, lab in enumerate(labels)]
    df = pd.DataFrame(expr, index=pd.Index(genes, name="gene"), columns=profiles)
    df.to_csv(OUT / f"{name}_expr.csv", float_format="%.17g")
    pd.DataFrame({"profile": profiles, "label": labels}).to_csv(
        OUT / f"{name}_labels.csv", index=False
    )


def main() -> None:
    # (a) balanced: 4 clusters x 3 samples, 200 genes
    rng = np.random.default_rng(20240501)
    expr, labels = _pseudobulk(rng, 200, [3, 3, 3, 3])
    _write("a_balanced", expr, labels)

    # (b) zero variance: gene 0 constant across all profiles, gene 1 all zero
    rng = np.random.default_rng(20240502)
    expr, labels = _pseudobulk(rng, 150, [3, 3, 3])
    expr[0, :] = np.log1p(20.0)
    expr[1, :] = 0.0
    _write("b_zero_var", expr, labels)

    # (c) unbalanced: 5 clusters with 2, 3, 4, 6, 9 profiles
    rng = np.random.default_rng(20240503)
    expr, labels = _pseudobulk(rng, 200, [2, 3, 4, 6, 9])
    _write("c_unbalanced", expr, labels)

    # (d) equal residual variances: one row plus gene-specific constants, so every gene has
    # the same residual variance and fitFDist's evar <= 0 (infinite prior df)
    rng = np.random.default_rng(20240504)
    base, labels = _pseudobulk(rng, 50, [3, 3, 3])
    row = base[np.argmax(base.var(axis=1))]
    shifts = rng.uniform(0.0, 5.0, 100)
    expr = row[None, :] + shifts[:, None]
    _write("d_equal_var", expr, labels)

    # (e) homoscedastic Gaussian noise: the residual variances differ between genes but their
    # log has less spread than expected, so evar <= 0 in the all-vs-all fit (df.prior = Inf,
    # s2.prior = mean of the variances; checked in R) while the one-vs-all fits stay finite
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 3)
    means = rng.uniform(1.0, 6.0, 200)[:, None]
    effects = np.where(rng.random((200, 4)) < 0.2, rng.normal(0, 1.5, (200, 4)), 0.0)
    expr = means + effects[:, labels] + rng.normal(0, 0.4, (200, labels.size))
    _write("e_homoscedastic", expr, labels)

    # (f) smallest residual df: 2 clusters with 2 and 1 profiles (df = 1)
    rng = np.random.default_rng(20240506)
    expr, labels = _pseudobulk(rng, 60, [2, 1])
    _write("f_min_df", expr, labels)


if __name__ == "__main__":
    main()
