"""Build pairot's gene tables (``OFFICIAL_GENES``, ``FILTERED_GENES``) from org.Hs.eg.db.

The source is the SQLite database of the Bioconductor annotation package org.Hs.eg.db, as
Debian packages it (``r-bioc-org.hs.eg.db`` 3.16.0-1: NCBI Gene data of 2022-09-12, Gene
Ontology of 2022-07-01). Get it without installing R::

    apt-get update
    apt-get download r-bioc-org.hs.eg.db=3.16.0-1
    dpkg-deb -x r-bioc-org.hs.eg.db_3.16.0-1_all.deb orgdb

then run, from the repository root::

    python scripts/build_gene_tables.py \
        orgdb/usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite

It writes ``src/pairot/pp/resources/official-genes.csv.gz`` and ``filtered-genes.csv.gz``
(only the standard library and pandas are needed). The rules are explained in
``src/pairot/pp/resources/README.md``; this script is their definition.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sqlite3
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "pairot" / "pp" / "resources"

#: Symbols NCBI gives genes that have no nomenclature-authority symbol.
NCBI_PLACEHOLDER = re.compile(r"^LOC\d+$")
#: NCBI gene types whose records are not genes (enhancers, phenotype loci, ...).
NOT_GENES = {"biological-region"}

# GO cellular-component terms (with all their descendants, table go_cc_all)
MITOCHONDRIAL_RIBOSOME = "GO:0005761"
MITOCHONDRIAL_OUTER_MEMBRANE_TRANSLOCASE = "GO:0005742"

# gene-name rules (NCBI full names)
MT_PSEUDOGENE_SYMBOL = re.compile(r"^MT(?:ND|CO|CYB|ATP|RNR|T)\w*P\d+$")
MT_PSEUDOGENE_NAME = re.compile(r"^(?:MT-\S+|mitochondrially encoded .*) pseudogene")
MRP_PSEUDOGENE_NAME = re.compile(r"^mitochondrial ribosomal protein .*pseudogene")
NUCLEAR_MT_TRNA_NAME = re.compile(r"^nuclear[- ]encoded mitochondrial")
RIBOSOMAL_PROTEIN_NAME = re.compile(r"\bribosomal protein (?:lateral stalk subunit P|[LS])")
RIBOSOMAL_PROTEIN_NOT = re.compile(r"kinase|binding protein|mitochondrial")
RIBOSOMAL_RNA_NAME = re.compile(r"^(?:RNA, )?[\d.]+S (?:pre-)?ribosomal")
TCR_NAME = re.compile(r"^T cell receptor (?:alpha|beta|gamma|delta) (?:variable|joining|diversity)")
TCR_CONSTANT_NAME = re.compile(r"^T cell receptor (?:alpha|beta|gamma|delta) constant")
BCR_NAME = re.compile(r"^immunoglobulin (?:heavy|kappa|lambda) (?:variable|joining|diversity)")
BCR_LIGHT_CONSTANT_NAME = re.compile(r"^immunoglobulin (?:kappa|lambda) constant")
SMALL_NCRNA_NAME = re.compile(
    r"^(?:microRNA|small nucleolar RNA, |small Cajal body|vault RNA|RNA, Ro60|RNA, Y\d"
    r"|small NF90|piwi-interacting|RNA, U\d|RNA, 7SK small nuclear$|RNA component of)"
)

CATEGORIES = ["mitochondrial", "ribosomal", "IncRNA", "TCR", "BCR"]


def read_genes(db: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Genes (id, symbol, name, type, chromosome), aliases and GO cellular components."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        genes = pd.read_sql(
            "SELECT g._id AS id, i.symbol, i.gene_name AS name, t.gene_type AS type "
            "FROM genes g JOIN gene_info i USING (_id) JOIN genetype t USING (_id)",
            con,
        )
        chromosomes = pd.read_sql("SELECT _id AS id, chromosome FROM chromosomes", con)
        aliases = pd.read_sql("SELECT _id AS id, alias_symbol AS alias FROM alias", con)
        go = pd.read_sql("SELECT DISTINCT _id AS id, go_id FROM go_cc_all", con)
        meta = dict(con.execute("SELECT name, value FROM metadata").fetchall())
    print("source:", {k: meta[k] for k in ("EGSOURCEDATE", "GOSOURCEDATE") if k in meta})
    mt = set(chromosomes.id[chromosomes.chromosome == "MT"])
    genes["mt_encoded"] = genes.id.isin(mt)
    return genes, aliases, go


def official_symbols(genes: pd.DataFrame, aliases: pd.DataFrame) -> pd.DataFrame:
    """The approved symbol of each gene kept (``symbol``) and its aliases, by gene id."""
    genes = genes[~genes.type.isin(NOT_GENES) & ~genes.symbol.str.match(NCBI_PLACEHOLDER)].copy()
    # NCBI names the mitochondrially encoded genes COX1, ND1, TRNF, ... and lists HGNC's
    # former dash-less symbols (MTCO1, MTND1, MTTC) as aliases; HGNC's approved symbols are
    # MT-CO1, MT-ND1, MT-TC (and 10x Genomics' references use them): derive them, from the
    # MT* alias, or from the tRNA symbol (TRNF -> MT-TF), and keep NCBI's symbol as an alias
    mt_ids = set(genes.id[genes.mt_encoded])
    dashless = aliases[aliases.id.isin(mt_ids) & aliases.alias.str.match(r"^MT[A-Z]")]
    hgnc_mt = (
        dashless.drop_duplicates("id").set_index("id").alias.str.replace(r"^MT", "MT-", regex=True)
    )
    from_trna = genes.set_index("id").symbol.str.replace(r"^TRN", "MT-T", regex=True)
    hgnc_mt = hgnc_mt.reindex(sorted(mt_ids)).fillna(from_trna.reindex(sorted(mt_ids)))
    ncbi_mt = genes[genes.mt_encoded][["id", "symbol"]].rename(columns={"symbol": "alias"})
    aliases = pd.concat([aliases, ncbi_mt], ignore_index=True)
    genes.loc[genes.mt_encoded, "symbol"] = genes.id[genes.mt_encoded].map(hgnc_mt)
    aliases = aliases[aliases.id.isin(genes.id)]
    aliases = aliases[aliases.alias.str.len() > 1]
    return genes, aliases


def categorize(genes: pd.DataFrame, go: pd.DataFrame) -> pd.Series:
    """The filter category of each gene (index: gene id), first matching rule wins."""
    name, symbol = genes.name, genes.symbol
    in_go = {term: genes.id.isin(go.id[go.go_id == term]) for term in go.go_id.unique()}
    none = pd.Series(False, index=genes.index)

    mitochondrial = (
        genes.mt_encoded
        | (genes.type.eq("pseudo") & symbol.str.match(MT_PSEUDOGENE_SYMBOL))
        | name.str.match(MT_PSEUDOGENE_NAME)
        | in_go.get(MITOCHONDRIAL_RIBOSOME, none)
        | name.str.match(MRP_PSEUDOGENE_NAME)
        | name.str.match(NUCLEAR_MT_TRNA_NAME)
        | in_go.get(MITOCHONDRIAL_OUTER_MEMBRANE_TRANSLOCASE, none)
    )
    tcr = name.str.match(TCR_NAME) | name.str.match(TCR_CONSTANT_NAME)
    bcr = name.str.match(BCR_NAME) | name.str.match(BCR_LIGHT_CONSTANT_NAME)
    ribosomal = (
        name.str.contains(RIBOSOMAL_PROTEIN_NAME) & ~name.str.contains(RIBOSOMAL_PROTEIN_NOT)
    ) | name.str.match(RIBOSOMAL_RNA_NAME)
    lncrna = genes.type.eq("ncRNA") & ~name.str.match(SMALL_NCRNA_NAME)

    category = pd.Series(pd.NA, index=genes.index, dtype=object)
    # later assignments lose: assign in reverse priority
    for label, mask in [
        ("IncRNA", lncrna),
        ("ribosomal", ribosomal),
        ("BCR", bcr),
        ("TCR", tcr),
        ("mitochondrial", mitochondrial),
    ]:
        category[mask.to_numpy()] = label
    return pd.Series(category.to_numpy(), index=genes.id.to_numpy())


def build(db: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    genes, aliases, go = read_genes(db)
    genes, aliases = official_symbols(genes, aliases)
    approved = set(genes.symbol)
    alias_rows = aliases[~aliases.alias.isin(approved)].drop_duplicates()

    official = pd.concat(
        [
            pd.DataFrame({"feature_name": sorted(approved), "origin": "Approved symbol"}),
            pd.DataFrame(
                {"feature_name": sorted(set(alias_rows.alias)), "origin": "Alias symbols"}
            ),
        ],
        ignore_index=True,
    )

    category = categorize(genes, go)
    by_id = genes.set_index("id")
    filtered_approved = pd.DataFrame(
        {
            "feature_name": by_id.symbol.reindex(category.dropna().index).to_numpy(),
            "origin": "Approved symbol",
            "filter_type": category.dropna().to_numpy(),
        }
    )
    # an alias is listed only when every gene it names is in one and the same category
    alias_category = alias_rows.assign(filter_type=alias_rows.id.map(category))
    per_alias = alias_category.groupby("alias").filter_type.agg(
        lambda c: c.iloc[0] if c.notna().all() and c.nunique() == 1 else pd.NA
    )
    per_alias = per_alias.dropna()
    filtered_alias = pd.DataFrame(
        {
            "feature_name": per_alias.index.to_numpy(),
            "origin": "Alias symbols",
            "filter_type": per_alias.to_numpy(),
        }
    )
    filtered = pd.concat([filtered_approved, filtered_alias], ignore_index=True)
    filtered["filter_type"] = pd.Categorical(filtered.filter_type, categories=CATEGORIES)
    filtered = filtered.sort_values(["filter_type", "origin", "feature_name"], kind="stable")
    filtered = filtered.drop_duplicates("feature_name").reset_index(drop=True)
    return official, filtered


def write(table: pd.DataFrame, path: Path) -> None:
    # mtime=0: the same input gives byte-identical files
    with gzip.GzipFile(path, "wb", mtime=0) as handle:
        handle.write(table.to_csv(index=False, lineterminator="\n").encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sqlite", type=Path, help="path of org.Hs.eg.sqlite")
    parser.add_argument("--out", type=Path, default=OUT, help="output folder")
    args = parser.parse_args()
    official, filtered = build(args.sqlite)
    args.out.mkdir(parents=True, exist_ok=True)
    write(official, args.out / "official-genes.csv.gz")
    write(filtered, args.out / "filtered-genes.csv.gz")
    print(official.origin.value_counts().to_string())
    print(filtered.groupby(["filter_type", "origin"], observed=True).size().to_string())


if __name__ == "__main__":
    main()
