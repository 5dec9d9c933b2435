"""Time and peak memory of ``DatasetMap.bootstrap``, relative to one solve.

Run by hand (not by CI)::

    python benchmarks/bench_bootstrap.py --size demo --n-bootstrap 20
    python benchmarks/bench_bootstrap.py --size 20000 --n-bootstrap 5

``demo`` is :func:`pairot.datasets.pbmc_demo` (n_top_genes=200); a number ``n`` is an
``n x n`` pair of :func:`pairot.datasets.simulate_pair` (10 cell types, 2,000 genes, 4 samples
per study, n_top_genes=350, as in ``bench_ot.py``). After preprocessing, one ``solve`` plus
the outputs is timed (cold: compilation included, then warm), then ``bootstrap`` for each of
``resample="cells"``, ``"samples"`` and both, and, for the cells, both layouts of a resample
(``_bootstrap.CELL_LAYOUT``: duplicated rows, the default, and unique cells with weights).
Peak memory is the resident set above the level before the call, sampled every 20 ms.
``--donor-schemes corrected duplicated bayesian`` compares the ways a donor draw enters
limma (``_bootstrap.DONOR_SCHEME``) on ``resample="samples"``: the mean number of markers per
study over the resamples against the full fit's, the share of pairs whose point estimate lies
inside its interval and the mean shift of the resampled median distance from the point
estimate. Printed as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import numpy as np
from bench_ot import machine_header


class PeakMemory:
    """Peak resident memory (GB) above the level at entry, sampled by a thread."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.base = self._rss()
        self.peak = self.base
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, self._rss())
                time.sleep(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.gb = (self.peak - self.base) / 1e9


def _data(size: str):
    import pairot as pr

    if size == "demo":
        query, reference = pr.datasets.pbmc_demo()
        n_top = 200
    else:
        n = int(size)
        query, reference = pr.datasets.simulate_pair(
            n_cells_query=n, n_cells_reference=n, n_genes=2000, n_cell_types=10, random_state=0
        )
        n_top = 350
    return pr.pp.preprocess_adatas(
        query, reference, "cell_type", "cell_type", "sample_id", "sample_id", n_top_genes=n_top
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="demo", help="'demo' or the cells per study")
    parser.add_argument("--n-bootstrap", type=int, default=20)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["cells", "cells-weighted", "samples", "both"],
        help="cells (duplicated rows), cells-weighted, samples, both",
    )
    parser.add_argument(
        "--donor-schemes",
        nargs="*",
        default=[],
        help="compare donor schemes (corrected, duplicated, bayesian) on resample='samples'",
    )
    args = parser.parse_args()

    import pairot as pr
    from pairot.tl import _bootstrap

    print(machine_header("bench_bootstrap"), flush=True)
    start = time.perf_counter()
    query, reference = _data(args.size)
    stored = [a.uns["pairot"]["pseudobulk"]["counts"] for a in (query, reference)]
    print(
        json.dumps(
            {
                "size": args.size,
                "cells": [query.n_obs, reference.n_obs],
                "preprocess_s": round(time.perf_counter() - start, 2),
                "stored_profiles": [list(s.shape) for s in stored],
                "stored_profiles_bytes": [int(s.nbytes) for s in stored],
            }
        ),
        flush=True,
    )
    dm = pr.tl.DatasetMap(query, reference)
    dm.init_geom(batch_size=1024)
    dm.init_problem()
    solve = {}
    for run in ("cold", "warm"):
        dm._aggregates = None
        with PeakMemory() as memory:
            t0 = time.perf_counter()
            dm.solve(progress=False)
            dm.compute_mapping()
            dm.compute_distance()
            solve[run] = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "step": "solve + outputs",
                "cold_s": round(solve["cold"], 3),
                "warm_s": round(solve["warm"], 3),
                "peak_gb": round(memory.gb, 3),
                "iterations": int(dm.ot_solution.n_iterations),
                "mode": dm.ot_solution.mode,
                "sparse": bool(dm.ot_solution.sparse),
            }
        ),
        flush=True,
    )
    for mode in args.modes:
        resample = {
            "cells": "cells",
            "cells-weighted": "cells",
            "samples": "samples",
            "both": ("cells", "samples"),
        }[mode]
        _bootstrap.CELL_LAYOUT = "weighted" if mode == "cells-weighted" else "duplicated"
        with PeakMemory() as memory:
            t0 = time.perf_counter()
            table = dm.bootstrap(args.n_bootstrap, resample=resample, progress=False)
            elapsed = time.perf_counter() - t0
        width = (table["mapping_high"] - table["mapping_low"]).to_numpy()
        print(
            json.dumps(
                {
                    "step": f"bootstrap {mode}",
                    "n_bootstrap": args.n_bootstrap,
                    "seconds": round(elapsed, 2),
                    "per_resample_s": round(elapsed / args.n_bootstrap, 3),
                    "per_resample_over_warm_solve": round(
                        elapsed / args.n_bootstrap / solve["warm"], 2
                    ),
                    "peak_gb": round(memory.gb, 3),
                    "resampled": table.attrs["resample"],
                    "median_mapping_width": round(float(np.median(width)), 4),
                    "point_inside_mapping": round(
                        float(
                            np.mean(
                                (table["mapping_low"] <= table["mapping"] + 1e-4)
                                & (table["mapping"] <= table["mapping_high"] + 1e-4)
                            )
                        ),
                        3,
                    ),
                    "point_inside_distance": round(
                        float(
                            np.mean(
                                (table["distance_low"] <= table["distance"])
                                & (table["distance"] <= table["distance_high"])
                            )
                        ),
                        3,
                    ),
                }
            ),
            flush=True,
        )
    _bootstrap.CELL_LAYOUT = "duplicated"
    for scheme in args.donor_schemes:
        _donor_scheme(dm, scheme, args.n_bootstrap)
    _bootstrap.DONOR_SCHEME = "corrected"


def _donor_scheme(dm, scheme: str, n_bootstrap: int) -> None:
    from pairot.tl import _bootstrap

    _bootstrap.DONOR_SCHEME = scheme
    resampler = _bootstrap.Resampler(dm, ("samples",), 0)
    markers = {}
    for name, de in resampler.studies.items():
        counts = []
        for index in range(n_bootstrap):
            rng = np.random.default_rng([0, index, 1])
            tables = de.tables(de.draw(rng))
            counts.append(len(resampler.labels.markers(name, *tables)))
        full = len(resampler.labels.fixed(name))
        markers[name] = {"full": full, "mean": round(float(np.mean(counts)), 2)}
    t0 = time.perf_counter()
    table = dm.bootstrap(n_bootstrap, resample="samples", progress=False)
    elapsed = time.perf_counter() - t0
    draws = dm._bootstrap_state[2]["distance"]
    shift = np.abs(np.median(draws, axis=0) - dm.compute_distance().to_numpy())
    inside = (table["distance_low"] <= table["distance"]) & (
        table["distance"] <= table["distance_high"]
    )
    print(
        json.dumps(
            {
                "step": f"donor scheme {scheme}",
                "n_bootstrap": n_bootstrap,
                "seconds": round(elapsed, 2),
                "markers": markers,
                "point_inside_distance": round(float(np.mean(inside)), 3),
                "mean_distance_shift": round(float(np.mean(shift)), 4),
                "max_distance_shift": round(float(np.max(shift)), 4),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
