"""Iterations and time to converge: plain Sinkhorn, the cluster-level correction, and other ways
to need fewer iterations.

Run by hand (not by CI)::

    python benchmarks/bench_convergence.py                 # all problems, n = 4000 simulated
    python benchmarks/bench_convergence.py --n 2000 --problems pbmc_demo similar_subtypes

Problems (epsilon 0.05, balanced cluster marginals, 350 HVGs, float32 as ``DatasetMap`` runs):

- ``pbmc_demo``: the real pair of ``pairot.datasets.pbmc_demo()`` (340 x 339 cells, 8 types,
  four T-cell subtypes that match each other only partly);
- ``one_to_one``: ``simulate_pair`` with 10 well separated types (n + n cells);
- ``missing_type``: ``simulate_pair(scenario="missing_type")``, ``tau_a = tau_b = 0.95``;
- ``similar_subtypes``: ``simulate_pair`` with 12 types in 3 lineages whose type programs are
  weak (5 genes, log fold change 0.8-1.5) beside strong lineage programs (50 genes).

For each problem, as JSON lines:

- ``pairot``: ``DatasetMap.solve()`` with ``cluster_correction=False`` (plain Sinkhorn) and with
  the default correction, in kernel mode and on the blocked log-domain path
  (``kernel_memory_budget=0``): iterations and corrections to the default threshold 1e-3, and
  the median wall time of 3 interleaved solves after one that compiles;
- accuracy: the largest difference of the mean mapping and of the distance of each against a
  tight solve (float64, threshold 1e-8, corrected);
- ``ideas``: iteration counts of plain Sinkhorn variants in float64 numpy on the dense kernel
  (same updates and error as pairot): over-relaxation ``f <- (1 - w) f + w f_sinkhorn`` with a
  fixed ``w`` and with ``w = 2 / (1 + sqrt(1 - r))`` from the rate ``r`` of the first 20
  iterations; epsilon scaling (epsilon halved from 0.8 every 10 iterations down to 0.05, then to
  convergence: all iterations counted); warm start from a solve on at most 25% of each cluster
  (iterations of that solve and of the full solve started from the c-transform of its
  resolution-free potentials). ``None`` means no convergence within 3,000 iterations.

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
from bench_ot import machine_header
from scipy.special import logsumexp

EPSILON = 0.05
MAX_ITERATIONS = 3000
CHECK = 10
PROBLEMS = ("pbmc_demo", "one_to_one", "missing_type", "similar_subtypes")


def make_problem(name: str, n: int, seed: int = 0):
    import pairot as pr

    tau = 1.0
    if name == "pbmc_demo":
        query, reference = pr.datasets.pbmc_demo()
    else:
        kwargs = {"n_cell_types": 10}
        if name == "missing_type":
            kwargs["scenario"] = "missing_type"
            tau = 0.95
        elif name == "similar_subtypes":
            kwargs = {
                "n_cell_types": 12,
                "n_lineages": 3,
                "n_markers_type": 5,
                "marker_log_fold_change": (0.8, 1.5),
                "n_markers_lineage": 50,
            }
        query, reference = pr.datasets.simulate_pair(n, n, 2000, random_state=seed, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q, r = pr.pp.preprocess_adatas(
            query, reference, "cell_type", "cell_type", "sample_id", "sample_id", n_top_genes=350
        )
    dm = pr.tl.DatasetMap(q, r)
    dm.init_geom(epsilon=EPSILON)
    dm.init_problem(tau_a=tau, tau_b=tau)
    return dm


def outputs(dm) -> tuple[np.ndarray, np.ndarray]:
    return dm.compute_mapping().to_numpy(), dm.compute_distance().to_numpy()


def tight_reference(dm):
    """Outputs of a float64 solve to 1e-8 (corrected, blocked log-domain path)."""
    from pairot.tl._ot import aggregate, sinkhorn

    geom, p = dm.geom, dm._problem
    out = sinkhorn(
        geom.x_aug,
        geom.y_aug,
        geom.offset,
        p["a"],
        p["b"],
        epsilon=geom.epsilon,
        tau_a=p["tau_a"],
        tau_b=p["tau_b"],
        threshold=1e-8,
        max_iterations=20_000,
        dtype=np.float64,
        progress=False,
        kernel_memory_budget=0,
        query_codes=geom.query_codes,
        ref_codes=geom.ref_codes,
    )
    sums = aggregate(
        geom.x_aug,
        geom.y_aug,
        geom.offset,
        out.f,
        out.g,
        epsilon=geom.epsilon,
        query_codes=geom.query_codes,
        ref_codes=geom.ref_codes,
        n_query_clusters=len(dm.query_clusters),
        n_ref_clusters=len(dm.reference_clusters),
        dtype=np.float64,
    )
    from pairot.tl._answers._scores import cluster_distance, mapping_mean

    mean = mapping_mean(sums["tm"], p["b"], geom.ref_codes, len(dm.reference_clusters))
    dist = cluster_distance(
        sums["mass"], sums["cost_mass"], sums["cost_sum"], geom.query_codes, geom.ref_codes
    )
    return out, np.asarray(mean), np.asarray(dist)


def pairot_runs(dm, reference, repeats: int) -> dict:
    configs = {
        f"{mode}_{'corrected' if corr else 'plain'}": {
            "cluster_correction": corr,
            "kernel_memory_budget": None if mode == "kernel" else 0,
        }
        for mode in ("kernel", "log")
        for corr in (False, True)
    }
    result = {}
    for name, kwargs in configs.items():  # one solve each that compiles, and the accuracy
        dm.solve(progress=False, **kwargs)
        sol = dm.ot_solution
        mean, dist = outputs(dm)
        result[name] = {
            "mode": sol.mode,
            "iterations": sol.n_iterations,
            "corrections": sol.n_corrections,
            "converged": bool(sol.converged),
            "final_error": float(f"{sol.errors[-1]:.3e}"),
            "max_abs_diff_mapping": float(f"{np.abs(mean - reference[1]).max():.2e}"),
            "max_abs_diff_distance": float(f"{np.abs(dist - reference[2]).max():.2e}"),
        }
    times = {name: [] for name in configs}
    names = list(configs)
    for rep in range(repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            start = time.perf_counter()
            dm.solve(progress=False, **configs[name])
            times[name].append(time.perf_counter() - start)
    for name in configs:
        result[name]["solve_s"] = round(float(np.median(times[name])), 4)
    return result


# ----------------------------------------------------------------- numpy variants (ideas)
class DenseProblem:
    """The problem of ``dm`` as a dense float64 cost, for the iteration-count experiments."""

    def __init__(self, dm):
        geom, p = dm.geom, dm._problem
        self.C = geom.cost()
        self.a, self.b = p["a"], p["b"]
        self.tau_a, self.tau_b = p["tau_a"], p["tau_b"]
        self.qc, self.rc = geom.query_codes, geom.ref_codes

    def subset(self, rows, cols):
        out = object.__new__(DenseProblem)
        out.C = self.C[np.ix_(rows, cols)]
        out.a = self.a[rows] / self.a[rows].sum()
        out.b = self.b[cols] / self.b[cols].sum()
        out.tau_a, out.tau_b = self.tau_a, self.tau_b
        out.qc, out.rc = self.qc[rows], self.rc[cols]
        return out


def dense_sinkhorn(
    prob: DenseProblem,
    *,
    omega=1.0,
    adaptive=False,
    eps=EPSILON,
    g0=None,
    schedule=None,
    max_iterations=MAX_ITERATIONS,
):
    """Log-domain Sinkhorn on the dense cost with over-relaxation / epsilon schedule.

    Returns (iterations to the pairot error < 1e-3 at a check, f, g); iterations is None if
    not reached. ``schedule``: epsilon per iteration for the first ``len(schedule)`` ones.
    """
    C, a, b = prob.C, prob.a, prob.b
    la, lb = np.log(a), np.log(b)
    f = np.zeros(C.shape[0])
    g = np.zeros(C.shape[1]) if g0 is None else g0.copy()
    errors = []
    w = 1.0 if adaptive else omega
    for it in range(1, max_iterations + 1):
        e = eps if schedule is None or it > len(schedule) else schedule[it - 1]
        ta, tb = prob.tau_a, prob.tau_b
        f_new = ta * e * (la - logsumexp((g[None, :] - C) / e, axis=1))
        f = (1 - w) * f + w * f_new
        g_new = tb * e * (lb - logsumexp((f[:, None] - C) / e, axis=0))
        g = (1 - w) * g + w * g_new
        if it % CHECK == 0 and (schedule is None or it >= len(schedule)):
            P = np.exp((f[:, None] + g[None, :] - C) / eps)
            ka = (1 - ta) / (ta * eps)
            kb = (1 - tb) / (tb * eps)
            err = np.abs(P.sum(1) - a * np.exp(-f * ka)).sum()
            err += np.abs(P.sum(0) - b * np.exp(-g * kb)).sum()
            errors.append(err)
            if err < 1e-3:
                return it, f, g
            if adaptive and len(errors) == 2 and errors[0] > 0:
                rate = min((errors[1] / errors[0]) ** (1 / CHECK), 0.9999)
                w = 2 / (1 + np.sqrt(1 - rate))
    return None, f, g


def warm_start(prob: DenseProblem, seed: int = 0):
    import pairot as pr

    rows = np.sort(pr.pp.downsample_indices(prob.qc, _quarter(prob.qc), random_state=seed))
    cols = np.sort(pr.pp.downsample_indices(prob.rc, _quarter(prob.rc), random_state=seed))
    sub = prob.subset(rows, cols)
    n_sub, f_sub, _ = dense_sinkhorn(sub)
    # resolution-free potential F_i = f_i - eps log a_i, then the c-transform on all cells
    F = f_sub - EPSILON * np.log(sub.a)
    G = -EPSILON * logsumexp(np.log(sub.a)[:, None] + (F[:, None] - prob.C[rows]) / EPSILON, axis=0)
    g0 = G + EPSILON * np.log(prob.b)
    n_full, _, _ = dense_sinkhorn(prob, g0=g0)
    return {"subsample_cells": [len(rows), len(cols)], "subsample": n_sub, "full": n_full}


def _quarter(codes: np.ndarray) -> int:
    return max(2, int(np.ceil(np.bincount(codes).max() / 4)))


def ideas(dm) -> dict:
    prob = DenseProblem(dm)
    out = {"plain": dense_sinkhorn(prob)[0]}
    for w in (1.3, 1.5, 1.8):
        out[f"over_relaxation_w{w}"] = dense_sinkhorn(prob, omega=w)[0]
    out["over_relaxation_adaptive"] = dense_sinkhorn(prob, adaptive=True)[0]
    schedule = []
    e = 0.8
    while e > EPSILON:
        schedule += [e] * CHECK
        e /= 2
    out["epsilon_scaling"] = dense_sinkhorn(prob, schedule=schedule)[0]
    out["epsilon_scaling_stages"] = len(schedule) // CHECK
    out["warm_start"] = warm_start(prob)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="cells per simulated study")
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-ideas", action="store_true", help="skip the numpy variants")
    args = parser.parse_args()
    print(machine_header("bench_convergence"), flush=True)
    for name in args.problems:
        dm = make_problem(name, args.n)
        reference = tight_reference(dm)
        result = {
            "problem": name,
            "n": int(dm.geom.x.shape[0]),
            "m": int(dm.geom.y.shape[0]),
            "query_clusters": len(dm.query_clusters),
            "reference_clusters": len(dm.reference_clusters),
            "tau": dm._problem["tau_a"],
            "tight_reference_iterations": reference[0].n_iterations,
            "pairot": pairot_runs(dm, reference, args.repeats),
        }
        if not args.no_ideas:
            result["ideas_iterations_to_1e-3"] = ideas(dm)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
