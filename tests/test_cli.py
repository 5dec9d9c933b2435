"""The ``pairot`` command line: outputs, equality with the Python API, errors, atomicity."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pandas as pd
import pytest

import pairot as pr
from pairot import __version__
from pairot._run import OUTPUT_FILES
from pairot.cli import main

TIMEOUT = 300


def _console_script() -> list[str]:
    """The installed ``pairot`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "pairot"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "pairot.cli"]  # pragma: no cover - no console script


def _pairot(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_console_script(), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        check=False,
    )


def _assert_one_line_error(stderr: str, *fragments: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("pairot: error:"), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _leftovers(folder: Path) -> list[str]:
    """Temporary or backup folders that pairot would leave next to its outputs."""
    return sorted(p.name for p in folder.iterdir() if ".pairot-" in p.name)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``pairot demo --out DIR`` through the real console script."""
    parent = tmp_path_factory.mktemp("demo")
    out = parent / "results" / "demo"  # the parent folder "results" does not exist yet
    proc = _pairot("demo", "--out", str(out))
    return proc, out


@pytest.fixture(scope="module")
def python_run():
    """The same analysis through the Python API, with the CLI's default parameters."""
    query, reference = pr.datasets.pbmc_demo()
    adata_query, adata_ref = pr.pp.preprocess_adatas(
        query,
        reference,
        cell_type_column_adata1="cell_type",
        cell_type_column_adata2="cell_type",
        sample_column_adata1="sample_id",
        sample_column_adata2="sample_id",
        n_top_genes=500,
        random_state=0,
    )
    dataset_map = pr.tl.DatasetMap(adata_query, adata_ref)
    dataset_map.init_geom(batch_size=1024, epsilon=0.05)
    dataset_map.init_problem(tau_a=1.0, tau_b=1.0)
    dataset_map.solve(progress=False)
    mappings = dataset_map.compute_mapping(None)
    distance = dataset_map.compute_distance()
    matches = dataset_map.select_similar_clusters(mappings["mean"], distance, output="table")
    return dataset_map, mappings, distance, matches


@pytest.fixture(scope="module")
def demo_h5ad(tmp_path_factory):
    """The demo pair as h5ad files, with different obs column names per study."""
    folder = tmp_path_factory.mktemp("h5ad")
    query, reference = pr.datasets.pbmc_demo()
    query.obs = query.obs.rename(columns={"cell_type": "celltype", "sample_id": "donor"})
    reference.obs = reference.obs.rename(columns={"cell_type": "label", "sample_id": "sample"})
    query.write_h5ad(folder / "query.h5ad")
    reference.write_h5ad(folder / "reference.h5ad")
    return folder


def _run_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run",
        str(folder / "query.h5ad"),
        str(folder / "reference.h5ad"),
        "--query-cell-type",
        "celltype",
        "--ref-cell-type",
        "label",
        "--query-sample",
        "donor",
        "--ref-sample",
        "sample",
        "--out",
        str(out),
        *extra,
    ]


# ------------------------------------------------------------------------------- demo
def test_demo_succeeds_and_writes_every_file(demo_run):
    proc, out = demo_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr == ""  # not a terminal: no bars; no warning either
    assert f"wrote {out}" in proc.stdout
    # one line per step on stdout, each stamped with the time since the start
    steps = [line for line in proc.stdout.splitlines() if line.startswith("pairot [")]
    for fragment in (
        "Loading the bundled PBMC demo pair",
        "Preprocessing 340 query and 339 reference cells",
        "Differential expression of the query",
        "Optimal transport (Sinkhorn) between 340 x 339 cells",
        "Mapping scores",
        "Distances between clusters",
        "Query clusters without a match",
        "Writing report.html",
    ):
        assert sum(fragment in line for line in steps) == 1, (fragment, steps)
    # two solves: the fit and the relaxed one of unmatched_clusters
    sinkhorn = "Sinkhorn: 340 x 339 cells; stops once the marginal error is below 1e-03."
    assert sum(sinkhorn in line for line in steps) == 2, steps
    assert all(re.match(r"pairot \[\d\d:\d\d\] [A-Z]", line) for line in steps), steps
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert all((out / name).stat().st_size > 0 for name in OUTPUT_FILES)
    assert _leftovers(out.parent) == []
    assert (out / "mapping.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "distance.png").read_bytes().startswith(b"\x89PNG")


def test_demo_tables_equal_the_python_api(demo_run, python_run):
    _, out = demo_run
    dataset_map, mappings, distance, matches = python_run
    options = {"check_exact": False, "atol": 1e-6, "rtol": 0}
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "mapping.parquet"), mappings["mean"], **options
    )
    for method in ("jensen_shannon", "transported_mass"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(out / f"mapping_{method}.parquet"), mappings[method], **options
        )
    pd.testing.assert_frame_equal(pd.read_parquet(out / "distance.parquet"), distance, **options)
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "label_distance.parquet"), dataset_map.label_distance, **options
    )
    written = pd.read_csv(out / "matches.csv")
    assert list(written.columns) == list(matches.columns)
    assert written[["query", "reference"]].values.tolist() == (
        matches[["query", "reference"]].values.tolist()
    )
    pd.testing.assert_series_equal(written["mapping"], matches["mapping"], **options)
    # The clusters with clear markers are matched to their namesakes.
    for cluster in ("CD14+ Monocyte", "CD19+ B", "CD56+ NK", "Dendritic"):
        assert [cluster, cluster] in written[["query", "reference"]].values.tolist()


def test_demo_run_json(demo_run, python_run):
    _, out = demo_run
    info = json.loads((out / "run.json").read_text())
    assert info["command"] == "demo"
    params = info["parameters"]
    assert params["n_top_genes"] == 500
    assert params["min_shared_genes"] == 50
    assert params["epsilon"] == 0.05
    assert params["tau_a"] == params["tau_b"] == 1.0
    assert params["batch_size"] == 1024
    assert params["n_samples"] is None
    assert params["threshold_mapping"] == 0.25
    assert params["threshold_distance"] == 1.0
    assert {"pairot", "numpy", "scipy", "pandas", "anndata", "scanpy", "jax"} <= set(
        info["versions"]
    )
    assert info["versions"]["pairot"] == __version__
    steps = {"read", "preprocess", "init_geom", "solve", "mapping", "distance", "report"}
    assert steps <= set(info["timings_s"])
    assert all(v >= 0 for v in info["timings_s"].values())
    assert info["timings_s"]["total"] >= info["timings_s"]["solve"] > 0
    data = info["data"]
    query, reference = pr.datasets.pbmc_demo()
    assert data["query"]["n_cells"] == data["query"]["n_cells_fit"] == query.n_obs
    assert data["reference"]["n_cells"] == reference.n_obs
    assert data["query"]["n_clusters"] == data["reference"]["n_clusters"] == 8
    assert sum(data["query"]["cells_per_cluster_fit"].values()) == query.n_obs
    assert data["n_hvgs"] == 500
    assert data["n_shared_genes"] >= 500
    dataset_map = python_run[0]
    solution = dataset_map.ot_solution
    assert data["sinkhorn"]["n_iterations"] == solution.n_iterations
    assert data["sinkhorn"]["converged"] is True
    assert data["sinkhorn"]["n_cluster_corrections"] == solution.n_corrections
    assert data["sinkhorn"]["mode"] == solution.mode
    # the demo is below the sparse mode's minimum size: dense passes, nothing skipped
    assert data["sinkhorn"]["sparse"] is solution.sparse is False
    assert data["sinkhorn"]["active_share"] == 1.0
    assert data["sinkhorn"]["skipped_mass_bound"] == 0.0
    assert data["sinkhorn"]["n_devices"] == solution.n_devices == 1
    assert data["sinkhorn"]["final_error"] < 1e-3
    assert data["n_matches"] == len(pd.read_csv(out / "matches.csv"))
    assert sorted(info["files"]) == sorted(OUTPUT_FILES)


def test_demo_cells_parquet_is_the_query_cell_mapping(demo_run, python_run):
    _, out = demo_run
    dataset_map = python_run[0]
    cells = pd.read_parquet(out / "cells.parquet")
    expected = dataset_map.compute_cell_mapping("query")
    pd.testing.assert_frame_equal(cells, expected, check_exact=False, atol=1e-6, rtol=0)
    assert list(cells.index) == list(pr.datasets.pbmc_demo()[0].obs_names)
    assert isinstance(cells["best"].dtype, pd.CategoricalDtype)
    info = json.loads((out / "run.json").read_text())
    assert "cells.parquet" in info["files"]
    assert "cell_mapping" in info["timings_s"]
    assert info["parameters"]["cells"] is True


def test_no_cells_skips_the_per_cell_outputs(demo_h5ad, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(_run_args(demo_h5ad, out, "--n-samples", "10", "--quiet", "--no-cells"))
    assert code == 0, capsys.readouterr().err
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f for f in OUTPUT_FILES if f != "cells.parquet")
    info = json.loads((out / "run.json").read_text())
    assert sorted(info["files"]) == written
    assert info["parameters"]["cells"] is False
    assert "cell_mapping" not in info["timings_s"]
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "<h2>Per-cell mapping</h2>" in report and "--no-cells" in report


def test_small_clusters_are_listed_apart(demo_h5ad, tmp_path, capsys):
    """--min-cells 12 puts the reference's 9-cell and the query's 10-cell memory T clusters
    below the threshold: merged, they are listed in run.json and, apart, in the report."""
    out = tmp_path / "out"
    args = ["--quiet", "--no-cells", "--min-cells", "12", "--small-clusters", "merge"]
    code = main(_run_args(demo_h5ad, out, *args))
    assert code == 0, capsys.readouterr().err
    info = json.loads((out / "run.json").read_text())
    small = {(r["side"], r["cluster"]): r for r in info["data"]["small_clusters"]}
    assert set(small) == {
        ("query", "CD4+/CD45RO+ Memory"),
        ("reference", "CD4+/CD45RO+ Memory"),
    }
    assert {r["n_cells"] for r in small.values()} == {9, 10}
    assert all(r["action"] == "merge" and r["merged_into"] for r in small.values())
    assert info["parameters"]["min_cells"] == 12
    mapping = pd.read_parquet(out / "mapping.parquet")
    assert "CD4+/CD45RO+ Memory" not in mapping.index
    assert "CD4+/CD45RO+ Memory" not in mapping.columns
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "Clusters too small to carry their share of the mass" in report
    assert "merged into" in report


def test_demo_refuses_to_overwrite(demo_run):
    _, out = demo_run
    before = (out / "run.json").read_bytes()
    code = main(["demo", "--out", str(out), "--quiet"])
    assert code == 2
    assert (out / "run.json").read_bytes() == before
    assert _leftovers(out.parent) == []


# -------------------------------------------------------------------------------- run
def test_run_on_h5ad_files(demo_h5ad, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(_run_args(demo_h5ad, out, "--n-samples", "20", "--quiet", "--seed", "1"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == ""  # --quiet
    assert "Sinkhorn" not in captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    info = json.loads((out / "run.json").read_text())
    assert info["command"] == "run"
    assert info["query"] == str(demo_h5ad / "query.h5ad")
    assert info["parameters"]["query_cell_type"] == "celltype"
    assert info["parameters"]["ref_sample"] == "sample"
    assert info["parameters"]["n_samples"] == 20
    assert info["parameters"]["seed"] == 1
    assert "downsample" in info["timings_s"]
    query = info["data"]["query"]
    # at most 20 cells per cluster enter the fit; smaller clusters are kept whole
    assert query["n_cells_fit"] < query["n_cells"] == 340
    assert max(query["cells_per_cluster_fit"].values()) == 20
    assert min(query["cells_per_cluster_fit"].values()) == 10
    mapping = pd.read_parquet(out / "mapping.parquet")
    for cluster in ("CD14+ Monocyte", "CD19+ B", "CD56+ NK", "Dendritic"):
        assert mapping.loc[cluster].idxmax() == cluster

    # Running again into the same folder replaces it only with --overwrite.
    stamp = (out / "run.json").read_bytes()
    assert main(_run_args(demo_h5ad, out, "--quiet")) == 2
    _assert_one_line_error(capsys.readouterr().err, "--overwrite")
    assert (out / "run.json").read_bytes() == stamp
    assert main(_run_args(demo_h5ad, out, "--quiet", "--overwrite")) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["parameters"]["n_samples"] is None
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- errors
def test_missing_file_exits_2_with_one_line(demo_h5ad, tmp_path):
    out = tmp_path / "out"
    args = _run_args(demo_h5ad, out)
    args[1] = str(tmp_path / "missing.h5ad")
    proc = _pairot(*args)
    assert proc.returncode == 2
    _assert_one_line_error(proc.stderr, "missing.h5ad", "does not exist")
    assert proc.stdout == ""
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind


def test_unreadable_file(demo_h5ad, tmp_path, capsys):
    bad = tmp_path / "bad.h5ad"
    bad.write_text("not an HDF5 file\n")
    args = _run_args(demo_h5ad, tmp_path / "out", "--quiet")
    args[2] = str(bad)
    assert main(args) == 2
    _assert_one_line_error(capsys.readouterr().err, "cannot read reference file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5ad"]


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_truncated_or_corrupt_file_is_one_line(demo_h5ad, tmp_path, capsys, damage):
    """A file cut short fails when it is opened; a file whose stored counts are damaged fails
    while its counts are streamed (the run reads its files backed): one line either way."""
    import h5py

    bad = tmp_path / "bad.h5ad"
    data = (demo_h5ad / "reference.h5ad").read_bytes()
    if damage == "truncated":
        bad.write_bytes(data[: len(data) * 9 // 10])
    else:
        bad.write_bytes(data)
        with h5py.File(bad, "r+") as handle:
            handle["X/indices"][100:140] = 10**6
    args = _run_args(demo_h5ad, tmp_path / "out", "--quiet")
    args[2] = str(bad)
    assert main(args) == 2
    err = capsys.readouterr().err
    if damage == "truncated":
        _assert_one_line_error(err, "cannot read reference file", "truncated")
    else:
        _assert_one_line_error(err, "cannot read cells", "of the reference's X", "corrupt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5ad"]


def test_run_reads_its_files_backed(demo_h5ad, tmp_path, monkeypatch):
    """``pairot run`` opens both inputs backed (the counts stay on disk) and never writes them."""
    import anndata

    opened = []
    real = anndata.read_h5ad

    def spy(path, *args, **kwargs):
        opened.append(kwargs.get("backed"))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(anndata, "read_h5ad", spy)
    before = [(demo_h5ad / n).read_bytes() for n in ("query.h5ad", "reference.h5ad")]
    assert main(_run_args(demo_h5ad, tmp_path / "out", "--quiet")) == 0
    assert opened == ["r", "r"]
    assert [(demo_h5ad / n).read_bytes() for n in ("query.h5ad", "reference.h5ad")] == before


@pytest.mark.parametrize(
    ("option", "message"),
    [("--query-cell-type", "celltype"), ("--ref-sample", "donor"), ("--ref-cell-type", "label")],
)
def test_wrong_column_name(demo_h5ad, tmp_path, capsys, option, message):
    args = _run_args(demo_h5ad, tmp_path / "out", "--quiet")
    args[args.index(option) + 1] = "no_such_column"
    assert main(args) == 2
    line = _assert_one_line_error(capsys.readouterr().err, option, "'no_such_column'")
    assert "available:" in line
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def few_shared_h5ad(tmp_path_factory):
    """The demo pair as h5ad files, the reference sharing only its first 30 gene names."""
    folder = tmp_path_factory.mktemp("few")
    query, reference = pr.datasets.pbmc_demo()
    query.obs = query.obs.rename(columns={"cell_type": "celltype", "sample_id": "donor"})
    reference.obs = reference.obs.rename(columns={"cell_type": "label", "sample_id": "sample"})
    reference.var_names = [g if i < 30 else f"OTHER{i}" for i, g in enumerate(query.var_names)]
    query.write_h5ad(folder / "query.h5ad")
    reference.write_h5ad(folder / "reference.h5ad")
    # the genes expressed (total count > 10) in both, counted by hand
    totals_q = dict(zip(query.var_names, query.X.sum(0).A1, strict=True))
    totals_r = dict(zip(reference.var_names, reference.X.sum(0).A1, strict=True))
    shared = [g for g in query.var_names if totals_q[g] > 10 and totals_r.get(g, 0) > 10]
    return folder, len(shared)


def test_too_few_shared_genes_is_a_one_line_error(few_shared_h5ad, tmp_path, capsys):
    folder, n_shared = few_shared_h5ad
    assert 0 < n_shared < 50
    assert main(_run_args(folder, tmp_path / "out", "--quiet")) == 2
    line = _assert_one_line_error(
        capsys.readouterr().err,
        f"The query study and the reference study share only {n_shared} genes expressed "
        "(total count > 10) in both, fewer than --min-shared-genes 50:",
        "carries no information",
        f"to run anyway, pass --min-shared-genes {n_shared}.",
    )
    assert re.search(r"adata[12]|min_shared_genes", line) is None, line
    assert list(tmp_path.iterdir()) == []
    # --n-top-genes below the minimum: refused, in the command line's words
    assert main(_run_args(folder, tmp_path / "out", "--quiet", "--n-top-genes", "20")) == 2
    _assert_one_line_error(
        capsys.readouterr().err,
        "--n-top-genes 20 is below --min-shared-genes 50:",
        "or pass --min-shared-genes 20 to run with 20 highly variable genes anyway.",
    )
    # lowered, it runs on the shared genes and records the option
    out = tmp_path / "lowered"
    lowered = ("--min-shared-genes", str(n_shared), "--no-cells", "--quiet")
    assert main(_run_args(folder, out, *lowered)) == 0, capsys.readouterr().err
    info = json.loads((out / "run.json").read_text())
    assert info["parameters"]["min_shared_genes"] == n_shared
    assert info["data"]["n_hvgs"] == info["data"]["n_shared_genes"] == n_shared


def test_output_under_a_regular_file(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("I am a file\n")
    assert main(["demo", "--out", str(blocker / "out"), "--quiet"]) == 2
    _assert_one_line_error(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_output_path_is_a_file_or_a_foreign_folder(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("data\n")
    assert main(["demo", "--out", str(target), "--overwrite", "--quiet"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "not a folder")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me\n")
    assert main(["demo", "--out", str(foreign), "--overwrite", "--quiet"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "no run.json")
    assert (foreign / "notes.txt").read_text() == "keep me\n"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--tau-a", "1.5", "tau_a"), ("--embedding-layer", "X_nope", "'X_nope'")],
)
def test_bad_method_option_exits_2(tmp_path, capsys, option, value, message):
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), option, value, "--quiet"]) == 2
    _assert_one_line_error(capsys.readouterr().err, message)
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_nothing(tmp_path, capsys, monkeypatch):
    """A failure after some files were written leaves neither them nor the staging folder."""
    import pairot.pl

    def broken(*args, **kwargs):
        msg = "figure failed"
        raise ValueError(msg)

    monkeypatch.setattr(pairot.pl, "distance", broken)  # mapping.png is written before
    out = tmp_path / "nested" / "out"
    assert main(["demo", "--out", str(out), "--quiet"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "figure failed")
    assert list(tmp_path.iterdir()) == []  # also the created parent folder is gone


def test_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "q.h5ad"])
    assert exit_.value.code == 2
    _assert_one_line_error(capsys.readouterr().err, "required")
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--out", "x", "--epsilon", "-1"])
    assert exit_.value.code == 2
    _assert_one_line_error(capsys.readouterr().err, "--epsilon")


# ---------------------------------------------------------------------- version, help
def test_version_through_the_console_script():
    proc = _pairot("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"pairot {__version__}"


def test_help(capsys):
    for argv in (["--help"], ["run", "--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--query-cell-type",
        "--ref-cell-type",
        "--query-sample",
        "--ref-sample",
        "--n-top-genes",
        "--min-shared-genes",
        "--n-samples",
        "--epsilon",
        "--tau-a",
        "--tau-b",
        "--batch-size",
        "--seed",
        "--filter-genes",
        "--embedding-layer",
        "--threshold-mapping",
        "--threshold-distance",
        "--overwrite",
        "--quiet",
    ):
        assert option in text
    # every option has a help text (argparse prints the option and its text on one line or
    # the text on the next line; an option without help ends its entry at once)
    run_help = subprocess.run(
        [*_console_script(), "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    for option, words in (
        ("--query-cell-type COL", "obs column of the query holding each cell's cluster"),
        ("--ref-cell-type COL", "obs column of the reference holding each cell's cluster"),
        ("--query-sample COL", "obs column of the query holding each cell's sample (donor"),
        ("--ref-sample COL", "obs column of the reference holding each cell's sample"),
        ("-q, --quiet", "print only warnings and errors: no step lines, progress bars or"),
        ("-v, --verbose", "log every detail"),
    ):
        assert words in _help_entry(run_help, option), run_help


def _help_entry(text: str, option: str) -> str:
    """The help of one option in ``--help`` output, its wrapped lines joined."""
    lines = text.splitlines()
    start = next(k for k, line in enumerate(lines) if line.strip().startswith(option))
    entry = [lines[start].strip()[len(option) :]]
    for line in lines[start + 1 :]:
        if not line.startswith("    ") or line.strip().startswith("-"):
            break
        entry.append(line.strip())
    return " ".join(" ".join(entry).split())


def test_quiet_and_verbose_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--out", "x", "-q", "-v"])
    assert exit_.value.code == 2
    _assert_one_line_error(capsys.readouterr().err, "-v/--verbose", "-q/--quiet")


def test_progress_bars_on_a_terminal(tmp_path):
    """With stderr on a terminal the Sinkhorn bar shows the error against the threshold."""
    primary, secondary = pty.openpty()
    # a real terminal has a size; a new pseudo-terminal has 0 columns
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        [*_console_script(), "demo", "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=secondary,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "160"},
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=TIMEOUT)
    os.close(primary)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen
    assert "Sinkhorn:" in screen and "(target 1e-03)" in screen, screen
    assert "/2000" not in screen  # no iteration-cap total
    assert "100%" in screen  # converged: the bar ends full


# ------------------------------------------------------------------- README claims
def _demo_figures_script():
    """docs/demo_figures.py, the script that prints the figures README.md quotes."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "docs" / "demo_figures.py"
    spec = importlib.util.spec_from_file_location("demo_figures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_demo_claims_hold(demo_run):
    """The namesakes and the score ranges README.md quotes hold for the mapping that
    `pairot demo` writes, so the README cannot drift from the demo unnoticed."""
    _, out = demo_run
    script = _demo_figures_script()
    claims = script.readme_claims()  # raises if README.md no longer states them
    assert set(claims["namesakes"]) == {"CD56+ NK", "CD19+ B", "CD14+ Monocyte", "Dendritic"}
    mapping = pd.read_parquet(out / "mapping.parquet")
    assert script.check_claims(mapping, claims) == []
    # "each column sums to 1", as the README's caption and text say
    assert mapping.sum(axis=0).between(0.999, 1.001).all()
    # the check can fail: a README claiming a tighter T-cell range than the demo gives
    figures = script.demo_figures(mapping)
    low, high = figures["t_block"]
    too_tight = {**claims, "t_range": (low + 0.01, high)}
    assert script.check_claims(mapping, too_tight) != []


# -------------------------------------------------------------------- CELLxGENE layout
@pytest.fixture(scope="module")
def cellxgene_h5ad(demo_h5ad, tmp_path_factory):
    """The demo query as a CELLxGENE file: normalized values in X, counts in raw.X and
    layers['counts'], Ensembl-like ids as var_names, symbols in var['feature_name']."""
    import anndata as ad
    import numpy as np
    from scipy import sparse

    folder = tmp_path_factory.mktemp("cellxgene")
    query = ad.read_h5ad(demo_h5ad / "query.h5ad")
    counts = sparse.csr_matrix(query.X, dtype=np.float32)
    var = pd.DataFrame(
        {"feature_name": np.asarray(query.var_names)},
        index=[f"ENSG{i:011d}" for i in range(query.n_vars)],
    )
    totals = np.asarray(counts.sum(axis=1)).ravel()
    normalized = sparse.csr_matrix(sparse.diags(1e4 / totals) @ counts)
    normalized.data = np.log1p(normalized.data)
    cxg = ad.AnnData(X=normalized, obs=query.obs.copy(), var=var)
    cxg.raw = ad.AnnData(X=counts.copy(), obs=query.obs.copy(), var=var.copy())
    cxg.layers["counts"] = counts.copy()
    cxg.write_h5ad(folder / "query.h5ad")
    (folder / "reference.h5ad").symlink_to(demo_h5ad / "reference.h5ad")
    return folder


@pytest.mark.parametrize("counts", ["raw", "layers/counts"])
def test_run_on_a_cellxgene_file(demo_h5ad, cellxgene_h5ad, tmp_path, capsys, counts):
    """--query-counts and --query-gene-symbols give the tables of counts in X with symbols
    as var_names; the outputs name genes by symbol."""
    expected, got = tmp_path / "x", tmp_path / "cxg"
    assert main(_run_args(demo_h5ad, expected, "--quiet", "--no-cells")) == 0
    extra = ("--query-counts", counts, "--query-gene-symbols", "feature_name")
    code = main(_run_args(cellxgene_h5ad, got, "--quiet", "--no-cells", *extra))
    assert code == 0, capsys.readouterr().err
    for name in ("mapping.parquet", "distance.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(expected / name), pd.read_parquet(got / name))
    pd.testing.assert_frame_equal(
        pd.read_csv(expected / "matches.csv"), pd.read_csv(got / "matches.csv")
    )
    report = (got / "report.html").read_text(encoding="utf-8")
    assert "ENSG0" not in report  # the marker genes behind the matches are named by symbol
    assert "feature_name" in report  # the parameters say where the names came from
    parameters = json.loads((got / "run.json").read_text())["parameters"]
    assert parameters["query_counts"] == counts
    assert parameters["query_gene_symbols"] == "feature_name"
    assert parameters["ref_counts"] == "X" and parameters["ref_gene_symbols"] is None


def test_cellxgene_file_without_counts_option(cellxgene_h5ad, tmp_path, capsys):
    """X refused as normalized: the one-line error names the option that reads the counts."""
    assert main(_run_args(cellxgene_h5ad, tmp_path / "out", "--quiet")) == 2
    _assert_one_line_error(
        capsys.readouterr().err,
        "the query's X contains non-integer values",
        "the query's raw.X holds integer counts: pass --query-counts 'raw'",
    )
    assert main(_run_args(cellxgene_h5ad, tmp_path / "out", "--query-counts", "layers/x")) == 2
    _assert_one_line_error(
        capsys.readouterr().err, "--query-counts 'layers/x' but the query study has no layer 'x'"
    )
    with pytest.raises(SystemExit) as exit_:
        main(_run_args(cellxgene_h5ad, tmp_path / "out", "--ref-counts", "counts"))
    assert exit_.value.code == 2
    _assert_one_line_error(capsys.readouterr().err, "--ref-counts", "'counts' is not a place")
    args = ("--query-counts", "raw", "--query-gene-symbols", "symbol")
    assert main(_run_args(cellxgene_h5ad, tmp_path / "out", *args)) == 2
    _assert_one_line_error(
        capsys.readouterr().err,
        "--query-gene-symbols 'symbol' but the query's raw.var has no column 'symbol'",
    )
