"""Time and peak memory of ``pairot.pp.preprocess_adatas`` on atlas-size files.

Run by hand (not by CI)::

    python benchmarks/bench_preprocess.py --scale seed          # the seed's 600,929 + 1,265,624
    python benchmarks/bench_preprocess.py --scale 200k --memory # backed and in memory, side by side
    python benchmarks/bench_preprocess.py --slope               # peak memory vs cells, 3 sizes
    python benchmarks/bench_preprocess.py --scale 200k --auroc  # the AUROC kernel vs a loop
    python benchmarks/bench_preprocess.py --scale 200k --cellxgene  # counts in raw.X, symbols

The simulated pairs are written to ``--data/<scale>`` by ``benchmarks/atlas_data.py`` (in
bounded memory, never held whole) the first time. Every measurement runs in a fresh child
process that opens the two files and preprocesses them, so its peak resident memory
(``ru_maxrss``) is what a user's session would need: ``backed`` opens them with
``anndata.read_h5ad(path, backed="r")`` (the counts are streamed), ``memory`` reads them
whole first. With ``--cellxgene`` each file is also rewritten in the CELLxGENE layout
(normalized values in ``X``, the counts in ``raw/X``, Ensembl-like ids as ``var_names``, the
symbols in ``var["feature_name"]``; ``atlas_data.write_cellxgene_copy``) and preprocessed
backed with ``counts_adata*="raw"`` and ``gene_symbols_adata*="feature_name"`` in a third child
(``cellxgene``), beside the ``backed`` run of the same counts in ``X``. Figures are printed as
JSON lines, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARGS = ("cell_type", "cell_type", "sample_id", "sample_id")
#: The seed tutorial's parameters.
KW = {"n_top_genes": 500, "n_samples_auroc": 10_000, "n_samples_hvg_selection": 100_000}
SLOPE_SCALES = ("q100k_r200k", "q200k_r400k", "q300k_r600k")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _data(args, scale: str) -> Path:
    sys.path.insert(0, str(HERE))
    import atlas_data

    folder = args.data / scale
    n_query, n_reference = atlas_data.SIZES[scale]
    atlas_data.write_pair(folder, n_cells_query=n_query, n_cells_reference=n_reference)
    return folder


def _log_with_memory() -> None:
    """Log lines to stderr, each with the peak resident memory since the previous line (a
    thread samples /proc/self/statm every 50 ms): where the peak of a run sits."""
    import logging
    import threading

    page = os.sysconf("SC_PAGE_SIZE")
    peak = [0]

    def sample() -> None:
        while True:
            with open("/proc/self/statm") as handle:
                peak[0] = max(peak[0], int(handle.read().split()[1]) * page)
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()

    class WithMemory(logging.Formatter):
        def format(self, record):
            text = super().format(record)
            gb, peak[0] = peak[0] / 1024**3, 0
            return f"{text}  [peak since last line {gb:.2f} GB]"

    handler = logging.StreamHandler()
    handler.setFormatter(WithMemory("%(relativeCreated)9.0f ms %(message)s"))
    logger = logging.getLogger("pairot")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def preprocess(folder: Path, mode: str) -> None:
    """Child process: open (backed) or read (memory) the pair, preprocess, print figures."""
    import anndata as ad

    import pairot as pr

    _log_with_memory()
    start = time.perf_counter()
    backed = None if mode == "memory" else "r"
    prefix = "cellxgene_" if mode == "cellxgene" else ""
    query = ad.read_h5ad(folder / f"{prefix}query.h5ad", backed=backed)
    reference = ad.read_h5ad(folder / f"{prefix}reference.h5ad", backed=backed)
    read_s = time.perf_counter() - start
    loaded_gb = _peak_rss_gb()
    kw = dict(KW)
    if mode == "cellxgene":
        kw.update(
            counts_adata1="raw",
            counts_adata2="raw",
            gene_symbols_adata1="feature_name",
            gene_symbols_adata2="feature_name",
        )
    start = time.perf_counter()
    q, r = pr.pp.preprocess_adatas(query, reference, *ARGS, **kw)
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "mode": mode,
                "cells": [query.n_obs, reference.n_obs],
                "genes": query.n_vars,
                "read_s": round(read_s, 1),
                "preprocess_s": round(elapsed, 1),
                "peak_rss_gb": round(_peak_rss_gb(), 2),
                "rss_after_reading_gb": round(loaded_gb, 2),
                "n_shared_genes": int(q.uns["pairot"]["params"]["n_shared_genes"]),
                "output_nnz": [int(q.X.nnz), int(r.X.nnz)],
                "de_ava_rows": [len(q.uns["pairot"]["de_ava"]), len(r.uns["pairot"]["de_ava"])],
                # equal digests: the same outputs (genes, counts, DE tables) whatever the layout
                "outputs_sha1": _digest(q, r),
            }
        ),
        flush=True,
    )


def _digest(*outputs) -> str:
    import hashlib

    h = hashlib.sha1()
    for out in outputs:
        h.update("\n".join(out.var_names).encode())
        h.update(out.X.data.tobytes())
        for key in ("de_ova", "de_ava"):
            table = out.uns["pairot"][key]
            h.update("\n".join(table["gene"].astype(str)).encode())
            h.update(table[["logFC", "P.Value", "auroc"]].to_numpy().tobytes())
    return h.hexdigest()[:16]


def auroc(folder: Path) -> None:
    """Child process: the AUROC kernel on the query's subsample against a per-pair loop."""
    import anndata as ad
    import numpy as np

    from pairot.pp._auroc import auroc_ova_ava, auroc_pairwise_loop
    from pairot.pp._reader import CountReader
    from pairot.pp._sampling import downsample_indices
    from pairot.pp._stream import CscBuilder, PassSpec, run_pass

    query = ad.read_h5ad(folder / "query.h5ad", backed="r")
    codes = query.obs["cell_type"].cat.codes.to_numpy()
    k = len(query.obs["cell_type"].cat.categories)
    rows = downsample_indices(codes, 10_000, random_state=0)
    take = np.zeros(query.n_obs, dtype=bool)
    take[rows] = True
    reader = CountReader(query.X, name="query")
    counts = run_pass(reader, PassSpec(auroc_counts=True), take_auroc=take).auroc_counts
    builder = CscBuilder(counts, rows.size)
    run_pass(reader, PassSpec(auroc=True), take_auroc=take, auroc_into=builder)
    X = builder.result()
    start = time.perf_counter()
    ova, ava = auroc_ova_ava(X, codes[rows], k)
    kernel = time.perf_counter() - start
    sub = np.arange(200)
    start = time.perf_counter()
    ova_loop, ava_loop = auroc_pairwise_loop(X[:, sub], codes[rows], k)
    loop = (time.perf_counter() - start) * query.n_vars / sub.size
    print(
        json.dumps(
            {
                "auroc_cells": int(rows.size),
                "auroc_genes": int(query.n_vars),
                "clusters": k,
                "kernel_s": round(kernel, 1),
                "pairwise_loop_s_extrapolated": round(loop, 1),
                "speedup": round(loop / kernel, 1),
                "max_abs_diff": float(np.nanmax(np.abs(ava_loop - ava[:, :, sub]))),
            }
        ),
        flush=True,
    )


def _versions() -> str:
    """The versions of the libraries the figures depend on (allocation patterns differ)."""
    from importlib.metadata import PackageNotFoundError, version

    names = ("pairot", "anndata", "scanpy", "numpy", "scipy", "h5py", "pandas", "numba", "jax")
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return f"python {sys.version.split()[0]}, " + ", ".join(found)


def _child(*args: str) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    # the child's log (one line per step, with its peak memory) goes to this stderr
    proc = subprocess.run(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(proc.returncode)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    figures = json.loads(lines[-1])
    print(json.dumps(figures), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="seed", help="a size of atlas_data.SIZES")
    parser.add_argument("--data", type=Path, default=Path("/tmp/pairot_seed"))
    parser.add_argument("--memory", action="store_true", help="also read the files whole")
    parser.add_argument("--slope", action="store_true", help=f"backed runs at {SLOPE_SCALES}")
    parser.add_argument("--auroc", action="store_true", help="the AUROC kernel vs a loop")
    parser.add_argument(
        "--cellxgene", action="store_true", help="also the CELLxGENE layout (raw.X, symbols)"
    )
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folder, mode = Path(args.child[0]), args.child[1]
        auroc(folder) if mode == "auroc" else preprocess(folder, mode)
        return
    print(f"# {os.cpu_count()} CPU cores; parameters {KW}", flush=True)
    print(f"# versions: {_versions()}", flush=True)
    if args.slope:
        points = []
        for scale in SLOPE_SCALES:
            figures = _child("--child", str(_data(args, scale)), "backed")
            points.append((sum(figures["cells"]), figures["peak_rss_gb"] * 1024**3))
        (x0, y0), (x1, y1) = points[0], points[-1]
        print(json.dumps({"slope_bytes_per_cell": round((y1 - y0) / (x1 - x0), 1)}))
        return
    folder = _data(args, args.scale)
    if args.auroc:
        _child("--child", str(folder), "auroc")
        return
    _child("--child", str(folder), "backed")
    if args.cellxgene:
        sys.path.insert(0, str(HERE))
        import atlas_data

        for name in ("query", "reference"):
            atlas_data.write_cellxgene_copy(
                folder / f"{name}.h5ad", folder / f"cellxgene_{name}.h5ad"
            )
        _child("--child", str(folder), "cellxgene")
    if args.memory:
        _child("--child", str(folder), "memory")


if __name__ == "__main__":
    main()
