"""Tests of the rule-based gene filter ``flag_uninformative_genes``."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from pairot.pp._genes import UNINFORMATIVE_GENE_PATTERNS, flag_uninformative_genes

# Every name with the expected answer (True = uninformative, dropped), written out by hand.
EXPECTED = {
    # mitochondrial
    "MT-CO1": True,
    "MT-ND4": True,
    "MT-RNR2": True,
    "MTRNR2L8": False,  # nuclear humanin-like gene, no "MT-" prefix
    "MTOR": False,
    # ribosomal proteins
    "RPL10": True,
    "RPL10A": True,
    "RPL36AL": True,
    "RPL7L1": True,
    "RPLP0": True,
    "RPLP2": True,
    "RPS27A": True,
    "RPS4X": True,
    "RPS4Y1": True,
    "RPSA": True,
    "RPL13AP5": True,  # pseudogene
    "RPSAP58": True,  # pseudogene
    "MRPL12": True,
    "MRPS18B": True,
    "MRPS36": True,
    "RPS6KA1": False,  # ribosomal protein S6 kinase: not a ribosomal protein
    "RPS6KB1": False,
    "RPS19BP1": False,  # RPS19 binding protein
    "RPN1": False,
    # lncRNA-like
    "LINC00123": True,
    "LINC01234": True,
    "LINC-PINT": True,
    "FOXP1-AS1": True,
    "HLA-DQB1-AS1": True,
    "RP11-34P13.7": True,
    "RP4-669L17.10": True,
    "CTD-2341M24.1": True,
    "CTC-338M12.4": True,
    "KB-1460A1.5": True,
    "AC012345.1": True,
    "AL627309.1": True,
    "AP000000.1": True,
    "Z98884.1": True,
    "HLA-DRA": False,
    "HLA-A": False,
    "ASAH1": False,
    "C1orf112": False,
    # T-cell receptor segments
    "TRAV1-2": True,
    "TRAV14DV4": True,
    "TRBV20-1": True,
    "TRGV9": True,
    "TRDV2": True,
    "TRAJ12": True,
    "TRBJ2-7": True,
    "TRBD1": True,
    "TRDD1": True,
    "TRAC": True,
    "TRBC1": True,
    "TRBC2": True,
    "TRGC2": True,
    "TRDC": True,
    "TRADD": False,  # TNFRSF1A associated via death domain
    "TRAF1": False,
    "TRAPPC1": False,
    "TRDN": False,
    # B-cell receptor segments
    "IGHV1-2": True,
    "IGHV3-23": True,
    "IGKV1-5": True,
    "IGLV3-21": True,
    "IGLVI-20": True,
    "IGHJ6": True,
    "IGKJ1": True,
    "IGLJ1": True,
    "IGHD1-26": True,  # heavy diversity segment
    "IGKC": True,
    "IGLC2": True,
    "IGHD": False,  # IgD constant gene, a B-cell marker
    "IGHM": False,
    "IGHG1": False,
    "IGHG4": False,
    "IGHA1": False,
    "IGHE": False,
    "IGLL1": False,
    "IGLL5": False,
    "IGLON5": False,
    "IGHMBP2": False,
    # ordinary markers
    "CD3E": False,
    "MS4A1": False,
    "CD79A": False,
    "JCHAIN": False,
    "NKG7": False,
}

MOUSE = {
    "mt-Co1": True,
    "mt-Nd1": True,
    "Rpl10a": True,
    "Rps27a": True,
    "Rplp0": True,
    "Mrpl12": True,
    "Rps6ka1": False,
    "Trbc2": True,
    "Trav6-5": True,
    "Igkc": True,
    "Ighv1-72": True,
    "Ighm": False,
    "Ighd": False,
    "Cd3e": False,
    "Gm12345": False,  # documented: not flagged
}


@pytest.mark.parametrize("table", [EXPECTED, MOUSE], ids=["human", "mouse"])
def test_expected_flags(table):
    names = list(table)
    flagged = flag_uninformative_genes(names)
    assert isinstance(flagged, np.ndarray)
    assert flagged.dtype == bool
    assert flagged.shape == (len(names),)
    wrong = {n: bool(f) for n, f in zip(names, flagged, strict=True) if bool(f) != table[n]}
    assert wrong == {}


def test_each_category_matches_its_examples():
    # The documented categories each flag their own examples and nothing of the others.
    examples = {
        "mitochondrial": "MT-CO1",
        "ribosomal": "RPS27A",
        "lncRNA": "RP11-34P13.7",
        "TCR": "TRBC1",
        "BCR": "IGKC",
    }
    for category, name in examples.items():
        for other, pattern in UNINFORMATIVE_GENE_PATTERNS.items():
            assert bool(re.match(pattern, name)) == (other == category), (category, other)


@pytest.mark.parametrize(
    "container",
    [list, tuple, np.array, pd.Index, pd.Series, lambda x: np.asarray(x, dtype=str)],
)
def test_accepts_common_containers(container):
    names = ["CD3E", "MT-CO1", "RPS6KA1", "IGKC"]
    np.testing.assert_array_equal(
        flag_uninformative_genes(container(names)), [False, True, False, True]
    )


def test_empty_input():
    out = flag_uninformative_genes([])
    assert out.dtype == bool
    assert out.shape == (0,)


def test_keep_and_drop_override_rules():
    names = ["MT-CO1", "RPL10", "CD3E", "MS4A1", "IGKC"]
    out = flag_uninformative_genes(names, keep=["IGKC", "NOT_PRESENT"], drop=["CD3E"])
    np.testing.assert_array_equal(out, [True, True, True, False, False])
    # exact, case-sensitive matching of keep / drop
    out = flag_uninformative_genes(names, keep={"igkc"}, drop=("cd3e",))
    np.testing.assert_array_equal(out, [True, True, False, False, True])
    # empty lists change nothing
    np.testing.assert_array_equal(
        flag_uninformative_genes(names, keep=[], drop=[]), flag_uninformative_genes(names)
    )


def test_keep_and_drop_must_not_overlap():
    with pytest.raises(ValueError, match="both keep and drop.*IGKC"):
        flag_uninformative_genes(["IGKC"], keep=["IGKC"], drop=["IGKC", "CD3E"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"genes": "MT-CO1"}, TypeError, r"genes.*single string.*\['MT-CO1'\]"),
        ({"genes": 5}, TypeError, "genes must be a 1-D sequence"),
        ({"genes": ["CD3E", None]}, TypeError, "element 1 is None"),
        ({"genes": ["CD3E", np.nan]}, TypeError, "element 1 is nan"),
        ({"genes": np.array([1, 2])}, TypeError, "element 0 is 1"),
        ({"genes": np.array([["A", "B"]])}, ValueError, r"genes must be 1-D.*\(1, 2\)"),
        ({"genes": ["CD3E"], "keep": "CD3E"}, TypeError, "keep.*single string"),
        ({"genes": ["CD3E"], "drop": [3]}, TypeError, "drop must contain only strings"),
    ],
)
def test_input_validation(kwargs, error, match):
    genes = kwargs.pop("genes")
    with pytest.raises(error, match=match):
        flag_uninformative_genes(genes, **kwargs)


def test_does_not_modify_input():
    names = ["MT-CO1", "CD3E"]
    index = pd.Index(names)
    flag_uninformative_genes(names, keep=["MT-CO1"])
    flag_uninformative_genes(index)
    assert names == ["MT-CO1", "CD3E"]
    assert index.equals(pd.Index(["MT-CO1", "CD3E"]))
