"""Calibrate ``DatasetMap.unmatched_clusters`` on simulated pairs with one type missing.

For each strength (how close the missing type is to its nearest reference type, the
simulator's ``missing_type_similarity``) and each seed, one ``simulate_pair(scenario=
"missing_type")`` pair runs the whole pipeline; the per-cluster scores are written to a CSV
and summarized: the flag rate of the missing type and the false flags of the known types,
per candidate score and threshold, and for the chosen rule.

    python benchmarks/bench_novelty.py [--seeds 10] [--strengths 0 0.5 0.7] [--out scores.csv]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

import pairot as pr

N_CELLS = 1000
N_GENES = 1000
N_TOP_GENES = 300
N_CELL_TYPES = 8


def scores(seed: int, similarity: float, *, n_cells: int = N_CELLS, tau_a=None) -> pd.DataFrame:
    """The ``unmatched_clusters`` table of one simulated pair, with the truth beside it."""
    query, reference = pr.datasets.simulate_pair(
        n_cells,
        n_cells,
        N_GENES,
        scenario="missing_type",
        n_cell_types=N_CELL_TYPES,
        random_state=seed,
        missing_type_similarity=similarity,
    )
    q, r = pr.pp.preprocess_adatas(
        query,
        reference,
        "cell_type",
        "cell_type",
        "sample_id",
        "sample_id",
        n_top_genes=N_TOP_GENES,
    )
    dm = pr.tl.DatasetMap(q, r)
    dm.init_geom(epsilon=0.05)
    dm.init_problem()
    dm.solve(progress=False)
    kwargs = {} if tau_a is None else {"tau_a": tau_a}
    table = dm.unmatched_clusters(**kwargs)
    missing = query.uns["simulation"]["params"]["missing_type"]
    table = table.assign(seed=seed, similarity=similarity, missing=table.index == missing)
    return table.reset_index()


#: Candidate rules: (name, column, direction, threshold); direction -1 flags below.
CANDIDATES = (
    ("retained < 0.6", "retained", -1, 0.6),
    ("mapping_ratio < 0.7", "mapping_ratio", -1, 0.7),
    ("distance_ratio > 1.6", "distance_ratio", 1, 1.6),
    ("label_distance > 0.25", "label_distance", 1, 0.25),
    ("feature_ratio > 1.05", "feature_ratio", 1, 1.05),
)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per strength: missing type flagged (of the seeds) / known types flagged (total), per
    candidate rule and for the chosen rule (``unmatched``), and each score's AUC."""
    rows = []
    for similarity, group in table.groupby("similarity"):
        missing = group["missing"].to_numpy()
        row = {"similarity": similarity, "seeds": group["seed"].nunique()}
        for name, column, direction, threshold in CANDIDATES:
            values = direction * group[column].to_numpy()
            flagged = values > direction * threshold
            auc = (values[missing][:, None] > values[~missing][None, :]).mean()
            row[name] = f"{flagged[missing].sum()}/{flagged[~missing].sum()} (AUC {auc:.3f})"
        flagged = group["unmatched"].to_numpy()
        row["chosen: both of the first two"] = f"{flagged[missing].sum()}/{flagged[~missing].sum()}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("similarity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.5, 0.7])
    parser.add_argument("--n-cells", type=int, default=N_CELLS)
    parser.add_argument("--tau-a", type=float, default=None)
    parser.add_argument("--out", default="novelty_scores.csv")
    args = parser.parse_args()
    frames = []
    for similarity in args.strengths:
        for seed in range(args.seeds):
            start = time.perf_counter()
            frames.append(scores(seed, similarity, n_cells=args.n_cells, tau_a=args.tau_a))
            print(
                f"similarity {similarity:g} seed {seed}: {time.perf_counter() - start:.1f} s",
                flush=True,
            )
            pd.concat(frames).to_csv(args.out, index=False)
    table = pd.concat(frames)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print("missing type flagged (of the seeds) / known types flagged (in total):")
        print(summary(table).to_string())


if __name__ == "__main__":
    main()
