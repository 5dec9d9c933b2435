"""The figures README.md quotes about the bundled demo, and docs/demo_mapping.png.

Run by hand from the repository root after a change that may move them::

    python docs/demo_figures.py               # print the figures, rewrite docs/demo_mapping.png
    python docs/demo_figures.py --no-figure   # print only
    python docs/demo_figures.py --runs 5      # time `pairot demo` five times (default 3)

It runs ``pairot.datasets.pbmc_demo()`` through :func:`pairot._run.run_pipeline` with the
parameters of ``pairot demo`` (its defaults, obs columns ``cell_type`` / ``sample_id``), prints
the mapping figures, checks them against the ranges README.md quotes (:func:`readme_claims`),
times the ``pairot demo`` console script in fresh processes (import, run and every output
file, as a user sees it) and redraws ``docs/demo_mapping.png``. ``tests/test_cli.py`` checks
the same README claims on every test run, so the README cannot drift from the demo unnoticed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FIGURE = ROOT / "docs" / "demo_mapping.png"

#: The README's words for the demo clusters whose namesakes it claims, and their names.
NAMESAKES = {
    "NK": "CD56+ NK",
    "B cells": "CD19+ B",
    "CD14+ monocytes": "CD14+ Monocyte",
    "dendritic cells": "Dendritic",
}
#: The demo's T-cell clusters (the same four names in both studies).
T_CELLS = [
    "CD4+/CD25 T Reg",
    "CD4+/CD45RO+ Memory",
    "CD8+ Cytotoxic T",
    "CD8+/CD45RA+ Naive Cytotoxic",
]


def readme_claims(text: str | None = None) -> dict:
    """The demo figures README.md states, parsed from its text.

    Returns ``namesakes`` (cluster names), ``namesake_min`` (the score the namesakes exceed),
    ``t_range`` (the interval every entry of the T-cell block lies in), ``outside_max``
    (the bound on a T-cell cluster's score for any non-T-cell cluster) and ``seconds`` (the
    range quoted for the wall time of ``pairot demo``).
    """
    text = " ".join((README.read_text(encoding="utf-8") if text is None else text).split())
    patterns = {
        "namesakes": r"On the demo, (.+?) find their namesakes \(mapping above (\d\.\d+)\)",
        "t_range": r"T-cell block lies between (\d\.\d+) and (\d\.\d+)",
        "outside_max": r"T-cell clusters score below (\d\.\d+) for every other cluster",
        "seconds": r"\(about (\d+)-(\d+) s\b",
    }
    found = {}
    for key, pattern in patterns.items():
        match = re.search(pattern, text)
        if match is None:
            msg = f"README.md no longer states the demo claim {key!r} (pattern {pattern!r})"
            raise ValueError(msg)
        found[key] = match.groups()
    words = re.split(r", | and ", found["namesakes"][0])
    unknown = [w for w in words if w not in NAMESAKES]
    if unknown:
        msg = f"README.md names namesakes {unknown} that NAMESAKES does not know"
        raise ValueError(msg)
    return {
        "namesakes": [NAMESAKES[w] for w in words],
        "namesake_min": float(found["namesakes"][1]),
        "t_range": tuple(float(v) for v in found["t_range"]),
        "outside_max": float(found["outside_max"][0]),
        "seconds": tuple(float(v) for v in found["seconds"]),
    }


def demo_figures(mapping: pd.DataFrame) -> dict:
    """The figures of a demo mapping (the ``"mean"`` table) that README.md quotes."""
    block = mapping.loc[T_CELLS, T_CELLS].to_numpy()
    others = [c for c in mapping.columns if c not in T_CELLS]
    return {
        "namesakes": {c: float(mapping.loc[c, c]) for c in NAMESAKES.values()},
        "best_column": {c: str(mapping.loc[c].idxmax()) for c in NAMESAKES.values()},
        "t_block": (float(block.min()), float(block.max())),
        "t_outside_max": float(mapping.loc[T_CELLS, others].to_numpy().max()),
        "column_sums": (float(mapping.sum(axis=0).min()), float(mapping.sum(axis=0).max())),
    }


def check_claims(mapping: pd.DataFrame, claims: dict | None = None) -> list[str]:
    """The README claims that a demo mapping does not satisfy (empty when all hold)."""
    claims = readme_claims() if claims is None else claims
    figures = demo_figures(mapping)
    failed = []
    for cluster in claims["namesakes"]:
        score = float(mapping.loc[cluster, cluster])
        if not score > claims["namesake_min"] or figures["best_column"][cluster] != cluster:
            failed.append(f"namesake {cluster!r}: {score:.4f}, best {figures['best_column']}")
    low, high = claims["t_range"]
    if not low <= figures["t_block"][0] <= figures["t_block"][1] <= high:
        failed.append(f"T-cell block {figures['t_block']} not within [{low}, {high}]")
    if not figures["t_outside_max"] < claims["outside_max"]:
        failed.append(f"T-cell rows outside the block up to {figures['t_outside_max']:.4f}")
    return failed


def time_console_demo(runs: int) -> list[float]:
    """Wall seconds of ``pairot demo --out DIR --quiet`` in fresh processes."""
    script = Path(sys.executable).parent / "pairot"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "pairot.cli"]
    seconds = []
    for _ in range(runs):
        folder = Path(tempfile.mkdtemp(prefix="pairot-demo-"))
        try:
            start = time.perf_counter()
            subprocess.run([*command, "demo", "--out", str(folder / "out"), "--quiet"], check=True)
            seconds.append(time.perf_counter() - start)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-figure", action="store_true", help="do not redraw the figure")
    parser.add_argument("--runs", type=int, default=3, help="timed `pairot demo` runs (3)")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import pairot as pr
    from pairot._run import DEMO_COLUMNS, RunParameters, run_pipeline

    query, reference = pr.datasets.pbmc_demo()
    parameters = RunParameters(**DEMO_COLUMNS)
    result = run_pipeline(query, reference, parameters, progress=False)
    figures = demo_figures(result.mapping)
    print("namesake scores:", {k: round(v, 6) for k, v in figures["namesakes"].items()})
    print("T-cell block min, max: {:.4f}, {:.4f}".format(*figures["t_block"]))
    print(f"T-cell rows, other columns, max: {figures['t_outside_max']:.2e}")
    print("mapping column sums min, max: {:.6f}, {:.6f}".format(*figures["column_sums"]))
    print("suggested matches:", list(zip(result.matches["query"], result.matches["reference"])))
    print("in-process step seconds:", {k: round(v, 2) for k, v in result.timings.items()})

    claims = readme_claims()
    seconds = time_console_demo(args.runs) if args.runs > 0 else []
    if seconds:
        print("`pairot demo` wall seconds:", [round(s, 1) for s in seconds])
    failed = check_claims(result.mapping, claims)
    low, high = claims["seconds"]
    if seconds and not low <= min(seconds) <= max(seconds) <= high:
        failed.append(
            f"`pairot demo` took {min(seconds):.1f}-{max(seconds):.1f} s, README "
            f"says about {low:g}-{high:g} s"
        )
    print("README claims:", "all hold" if not failed else "NOT MET: " + "; ".join(failed))

    if not args.no_figure:
        ax = pr.pl.mapping(result.mapping, backend="matplotlib")
        ax.set_title('pbmc_demo: "mean" mapping (each column sums to 1)')
        ax.figure.savefig(FIGURE, dpi=110, bbox_inches="tight")
        print(f"wrote {FIGURE.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
