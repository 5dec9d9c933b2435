"""The gene tables OFFICIAL_GENES / FILTERED_GENES and the gene filter built on them.

References: genes whose category is known from their HGNC / NCBI records (hand-picked below),
upstream pairOT's tables (agreement figures, where ``shared/data/genes`` is present) and
scanpy's pbmc68k_reduced gene symbols (the share thresholds of the mouse / ID detection).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import pairot as pr
from pairot.pp._gene_filter import MIN_MATCH_SHARE, gene_filter_mask

# hand-picked genes, category from their NCBI Gene / HGNC records (None: not uninformative)
KNOWN = {
    "MT-CO1": "mitochondrial",  # mitochondrially encoded cytochrome c oxidase I
    "MT-ND3": "mitochondrial",
    "MT-RNR2": "mitochondrial",
    "MRPL12": "mitochondrial",  # mitochondrial ribosomal protein, nuclear-encoded
    "MRPS18B": "mitochondrial",
    "TOMM20": "mitochondrial",  # translocase of outer mitochondrial membrane
    "MTCO1P12": "mitochondrial",  # nuclear pseudogene of MT-CO1
    # NDUFA4 is a nuclear-encoded subunit of complex IV, annotated to the mitochondrion in
    # GO; the mitochondrial category (like upstream's) does not take every GO mitochondrion
    # gene (2,290 genes, most of them cell-type informative), so it is kept
    "NDUFA4": None,
    "RPL10": "ribosomal",
    "RPS27A": "ribosomal",
    "RPLP0": "ribosomal",
    "RPL13AP5": "ribosomal",  # pseudogene
    "RNA5S1": "ribosomal",  # 5S ribosomal RNA
    "RPS6KA1": None,  # ribosomal protein S6 kinase, not a ribosomal protein
    "TRBC1": "TCR",
    "TRAC": "TCR",
    "TRAV1-2": "TCR",
    "TRBV20-1": "TCR",
    "IGKC": "BCR",
    "IGLC2": "BCR",
    "IGHV1-2": "BCR",
    "IGKV1-5": "BCR",
    "IGHM": None,  # heavy constant genes are B-cell / plasma-cell markers
    "IGHG1": None,
    "LINC00115": "IncRNA",
    "MALAT1": "IncRNA",
    "XIST": "IncRNA",
    "FOXP1-AS1": "IncRNA",
    "CD3E": None,
    "MS4A1": None,
    "GAPDH": None,
    "CD79A": None,
    "NKG7": None,
    "LYZ": None,
}

# agreement with upstream pairOT's tables (reported in src/pairot/pp/resources/README.md)
COVERAGE = {"Approved symbol": 0.978, "Previous symbols": 0.996, "Alias symbols": 0.679}
OVERLAP = {  # category: (share of ours in theirs, share of theirs in ours)
    "mitochondrial": (0.754, 0.746),
    "ribosomal": (0.651, 0.855),
    "IncRNA": (0.933, 0.806),
    "TCR": (0.384, 1.000),
    "BCR": (0.357, 1.000),
}
MARGIN = 0.005


def upstream_dir() -> Path | None:
    candidates = [Path(__file__).resolve().parents[3] / "shared" / "data" / "genes"]
    if os.environ.get("PAIROT_SHARED"):
        candidates.insert(0, Path(os.environ["PAIROT_SHARED"]) / "data" / "genes")
    candidates.append(Path("/work/shared/data/genes"))
    for path in candidates:
        if (path / "official-genes.csv").is_file() and (path / "filtered-genes.csv").is_file():
            return path
    return None


def mouse_name(symbol: str) -> str:
    """A mouse-style spelling of a human symbol: MT-CO1 -> mt-Co1, RPL10 -> Rpl10."""
    if symbol.startswith("MT-"):
        return "mt-" + symbol[3:].capitalize()
    return symbol.capitalize()


@pytest.fixture(scope="module")
def pbmc_genes() -> list[str]:
    return [str(g) for g in sc.datasets.pbmc68k_reduced().var_names]


# ------------------------------------------------------------------------------- the tables
def test_tables_columns_and_dtypes():
    official, filtered = pr.pp.OFFICIAL_GENES, pr.pp.FILTERED_GENES
    assert list(official.columns) == ["feature_name", "origin"]
    assert list(filtered.columns) == ["feature_name", "origin", "filter_type"]
    for table in (official, filtered):
        assert table["feature_name"].map(type).eq(str).all()
        assert table["feature_name"].is_unique
        assert table["feature_name"].str.len().gt(0).all()
        assert list(table["origin"].cat.categories) == [
            "Approved symbol",
            "Previous symbols",
            "Alias symbols",
        ]
    assert list(filtered["filter_type"].cat.categories) == [
        "mitochondrial",
        "ribosomal",
        "IncRNA",
        "TCR",
        "BCR",
    ]
    assert (official["origin"] == "Approved symbol").sum() > 40_000
    counts = filtered["filter_type"].value_counts()
    assert (counts > 200).all()
    # the uses upstream's tutorial makes of them
    assert official["feature_name"].str.match(r"^[A-Z0-9]").mean() > 0.9
    sample = filtered.set_index("feature_name").sample(10, random_state=0)
    assert list(sample.columns) == ["origin", "filter_type"]


def test_tables_are_new_objects_each_time():
    table = pr.pp.OFFICIAL_GENES
    table.drop(table.index, inplace=True)
    assert len(pr.pp.OFFICIAL_GENES) > 40_000
    assert "OFFICIAL_GENES" in dir(pr.pp) and "FILTERED_GENES" in pr.pp.__all__
    with pytest.raises(AttributeError, match="NOT_A_TABLE"):
        _ = pr.pp.NOT_A_TABLE


@pytest.mark.parametrize("gene", list(KNOWN))
def test_known_genes(gene):
    official = set(pr.pp.OFFICIAL_GENES["feature_name"])
    filtered = pr.pp.FILTERED_GENES.set_index("feature_name")["filter_type"]
    assert gene in official
    expected = KNOWN[gene]
    assert (str(filtered[gene]) if gene in filtered.index else None) == expected
    assert bool(gene_filter_mask(list(KNOWN))[list(KNOWN).index(gene)]) == (expected is not None)


def test_not_official_names():
    official = set(pr.pp.OFFICIAL_GENES["feature_name"])
    for name in ["AC012345.1", "RP11-34P13.7", "LOC100128144", "ENSG00000141510", "GENE0001"]:
        assert name not in official


def test_agreement_with_upstream_tables():
    folder = upstream_dir()
    if folder is None:
        pytest.skip("upstream pairOT tables (shared/data/genes) not found; set PAIROT_SHARED")
    theirs_official = pd.read_csv(folder / "official-genes.csv")
    theirs_filtered = pd.read_csv(folder / "filtered-genes.csv")
    ours_official = set(pr.pp.OFFICIAL_GENES["feature_name"])
    ours_filtered = pr.pp.FILTERED_GENES
    for origin, expected in COVERAGE.items():
        names = theirs_official.loc[theirs_official["origin"] == origin, "feature_name"]
        covered = names.isin(ours_official).mean()
        assert covered >= expected - MARGIN, (origin, covered)
    assert COVERAGE["Approved symbol"] >= 0.95
    for kind, (ours_in_theirs, theirs_in_ours) in OVERLAP.items():
        ours = set(ours_filtered.loc[ours_filtered["filter_type"] == kind, "feature_name"])
        theirs = set(theirs_filtered.loc[theirs_filtered["filter_type"] == kind, "feature_name"])
        both = len(ours & theirs)
        assert both / len(ours) >= ours_in_theirs - MARGIN, (kind, both / len(ours))
        assert both / len(theirs) >= theirs_in_ours - MARGIN, (kind, both / len(theirs))


# -------------------------------------------------------------------- the filter and species
def test_human_symbols_matched_exactly(pbmc_genes, caplog):
    with caplog.at_level(logging.INFO, logger="pairot"):
        dropped = gene_filter_mask(pbmc_genes)
    assert not caplog.records  # nothing to say about human symbols
    genes = np.array(pbmc_genes)
    assert {"CD3E", "MS4A1", "LYZ", "NKG7"} <= set(genes[~dropped])
    assert {"RPL39", "RPS24", "MRPL9", "NEAT1", "RP11-782C8.1", "MT-ND3"} <= set(genes[dropped])
    # the measured share behind the threshold: 98% of pbmc68k_reduced's names are official
    official = set(pr.pp.OFFICIAL_GENES["feature_name"])
    assert np.isin(genes, list(official)).mean() > 0.95 > MIN_MATCH_SHARE


def test_mouse_symbols_matched_case_insensitively(pbmc_genes, caplog):
    names = [mouse_name(g) for g in pbmc_genes] + ["Gal", "Sst", "mt-Co1", "Rpl10", "Rps27a"]
    official = set(pr.pp.OFFICIAL_GENES["feature_name"])
    upper = {g.upper() for g in official}
    exact_share = np.isin(names, list(official)).mean()
    upper_share = np.isin([n.upper() for n in names], list(upper)).mean()
    assert exact_share < 0.05 and upper_share > 0.95  # what the threshold separates
    with caplog.at_level(logging.INFO, logger="pairot"):
        dropped = gene_filter_mask(names)
    kept = set(np.array(names)[~dropped])
    assert {"Gal", "Sst", "Cd3e", "Ms4a1", "Lyz"} <= kept
    assert not kept & {"mt-Co1", "mt-Nd3", "Rpl10", "Rps27a", "Mrpl12"} & set(names)
    assert {"mt-Co1", "Rpl10", "Rps27a"} <= set(np.array(names)[dropped])
    messages = [r.getMessage() for r in caplog.records if r.name == "pairot"]
    assert any("case-insensitively" in m and "upper-cased" in m for m in messages), messages


def test_gene_ids_skip_the_official_restriction(caplog):
    ids = [f"ENSG{i:011d}" for i in range(1, 200)] + ["MT-CO1", "RPL10"]
    with caplog.at_level(logging.INFO, logger="pairot"):
        dropped = gene_filter_mask(ids)
    assert not dropped[:-2].any()  # the IDs are all kept
    assert dropped[-2:].all()  # uninformative genes named by symbol still go
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "pairot"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "1% of the 201 genes" in message and "skipped" in message
    assert "gene_filtering=False" in message and "symbols" in message
    # the same gene set again (the marker filter runs on four tables): INFO, not a warning
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pairot"):
        np.testing.assert_array_equal(gene_filter_mask(ids), dropped)
    levels = [r.levelno for r in caplog.records if "skipped" in r.getMessage()]
    assert levels == [logging.INFO]


def test_keep_and_drop_lists():
    genes = ["CD3E", "NOTAGENE1", "RPL10", "MS4A1", "GAPDH", "LYZ"]
    np.testing.assert_array_equal(gene_filter_mask(genes), [0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(
        gene_filter_mask(genes, keep=["NOTAGENE1", "RPL10"], drop=["GAPDH"]), [0, 0, 0, 0, 1, 0]
    )
    with pytest.raises(ValueError, match="in both keep and drop"):
        gene_filter_mask(genes, keep=["CD3E"], drop=["CD3E"])
    with pytest.raises(TypeError, match="single string"):
        gene_filter_mask("CD3E")
    assert gene_filter_mask([]).shape == (0,)
    before = list(genes)
    gene_filter_mask(genes)
    assert genes == before


# ------------------------------------------------------------------------ where it is used
def test_marker_filter_uses_the_tables():
    genes = ["CD3E", "NOTAGENE1", "RPL10", "MS4A1", "GAPDH", "LYZ", "MT-CO1", "TRAV1-2"]
    de = pd.DataFrame(
        {
            "cluster": pd.Categorical(["a"] * len(genes)),
            "gene": pd.Categorical(genes, categories=genes),
            "logFC": np.linspace(3, 2, len(genes)),
            "P.Value": 0.001,
            "adj.P.Val": 0.01,
            "auroc": 0.9,
        }
    )
    out = pr.pp.filter_genes_ova(de)
    assert out["gene"].astype(str).tolist() == ["CD3E", "MS4A1", "GAPDH", "LYZ"]
    out = pr.pp.filter_genes_ova(de, gene_filtering=False)
    assert out["gene"].astype(str).tolist() == genes
    ava = de.assign(versus=pd.Categorical(["b"] * len(genes)))
    out = pr.pp.filter_genes_ava(ava)
    assert out["gene"].astype(str).tolist() == ["CD3E", "MS4A1", "GAPDH", "LYZ"]


def _study(seed: int, genes: list[str]) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    n_cells = 120
    labels = rng.integers(0, 2, size=n_cells)
    rate = np.full((2, len(genes)), 2.0)
    rate[0, :3] *= 6.0
    rate[1, 3:6] *= 6.0
    X = rng.poisson(rate[labels]).astype(np.float32)
    obs = pd.DataFrame(
        {
            "ct": pd.Categorical(np.array(["T", "B"])[labels]),
            "donor": pd.Categorical([f"d{s}" for s in rng.integers(0, 3, size=n_cells)]),
        },
        index=[f"c{seed}_{i}" for i in range(n_cells)],
    )
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))


def test_preprocess_filter_genes_uses_the_tables():
    genes = ["CD3E", "CD3D", "IL7R", "MS4A1", "CD79A", "CD19", "GAPDH", "LYZ", "NKG7"]
    genes += ["NOTAGENE1", "RPL10", "MT-CO1", "IGKV1-5"]
    a1, a2 = _study(1, genes), _study(2, genes)
    args = (a1, a2, "ct", "ct", "donor", "donor")
    small = {"min_shared_genes": 5}  # 9 to 13 genes: this tests the filter, not the mapping
    q, _ = pr.pp.preprocess_adatas(*args, n_top_genes=5, filter_genes=True, **small)
    kept = set(q.uns["pairot"]["de_ova"]["gene"].cat.categories)
    assert kept == set(genes[:9])
    q, _ = pr.pp.preprocess_adatas(
        *args, n_top_genes=5, filter_genes=True, genes_to_keep=["NOTAGENE1", "RPL10"], **small
    )
    kept = set(q.uns["pairot"]["de_ova"]["gene"].cat.categories)
    assert kept == set(genes[:9]) | {"NOTAGENE1", "RPL10"}
    q, _ = pr.pp.preprocess_adatas(*args, n_top_genes=5, **small)
    assert set(q.uns["pairot"]["de_ova"]["gene"].cat.categories) == set(genes)
    assert list(a1.var_names) == genes  # the caller's objects are untouched
