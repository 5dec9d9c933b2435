"""The ``pairot`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    import pairot as pr

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    timings = {}
    start = time.perf_counter()
    query, reference = pr.datasets.pbmc_demo(random_state=args.seed)
    timings["load"] = time.perf_counter() - start
    start = time.perf_counter()
    adata_query, adata_ref = pr.pp.preprocess_adatas(
        query,
        reference,
        cell_type_column_adata1="cell_type",
        cell_type_column_adata2="cell_type",
        sample_column_adata1="sample_id",
        sample_column_adata2="sample_id",
        n_top_genes=args.n_top_genes,
        random_state=args.seed,
    )
    timings["preprocess"] = time.perf_counter() - start
    tmp = Path(tempfile.mkdtemp(prefix=".pairot-", dir=out.parent))
    try:
        for role, adata in (("query", adata_query), ("reference", adata_ref)):
            info = adata.uns["pairot"]
            info["de_ova"].to_parquet(tmp / f"{role}_de_ova.parquet")
            pr.pp.filter_genes_ova(info["de_ova"]).to_csv(tmp / f"{role}_markers.csv", index=False)
            adata.write_h5ad(tmp / f"{role}_preprocessed.h5ad")
        summary = {
            "version": pr.__version__,
            "n_cells": {"query": adata_query.n_obs, "reference": adata_ref.n_obs},
            "n_hvgs": adata_query.n_vars,
            "n_shared_genes": adata_query.uns["pairot"]["params"]["n_shared_genes"],
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        }
        (tmp / "run.json").write_text(json.dumps(summary, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(
        f"pairot demo: wrote {out}/ ({adata_query.n_obs} query and {adata_ref.n_obs} "
        f"reference cells, {adata_query.n_vars} HVGs, preprocessing "
        f"{timings['preprocess']:.1f} s)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pairot import __version__

    parser = argparse.ArgumentParser(
        prog="pairot",
        description="Match cell-type clusters of a query and a reference single-cell study.",
    )
    parser.add_argument("--version", action="version", version=f"pairot {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run pairot on a small bundled pair of PBMC studies")
    demo.add_argument("--out", required=True, help="output folder")
    demo.add_argument("--n-top-genes", type=int, default=350, help="highly variable genes")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except (ValueError, KeyError, TypeError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"pairot: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
