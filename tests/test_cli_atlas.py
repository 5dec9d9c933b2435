"""``pairot atlas``: its tables equal ``AtlasMap`` run in Python on the same files and options,
per-study columns, resume (a second run fits nothing), the offline report and its picture,
bad input as one line on stderr."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import pairot as pr
from pairot.cli import main
from pairot.pp._study_files import safe_name

#: the published method per pair (not the atlas defaults): on these studies the atlas defaults
#: read B's L2_T2, a sibling of L2_T1 that A and C lack, as part of a3 / c3 (a split), the
#: published options as a type of B only (docs/method.md#many-studies-atlas)
PUBLISHED = ["--label-distance-mode", "pairot", "--marginals", "balanced"]
PUBLISHED += ["--tau-a", "1", "--tau-b", "1"]
FIT = ["--n-top-genes", "80", "--batch-size", "256", *PUBLISHED]
GEOM = {
    "epsilon": 0.05,
    "batch_size": 256,
    "embedding_layer": None,
    "label_distance_mode": "pairot",
}
PROBLEM = {"marginals_distribution": "balanced", "tau_a": 1.0, "tau_b": 1.0}


def _relabel(adata, mapping, drop=()):
    out = adata[~adata.obs["cell_type"].isin(list(drop)).to_numpy()].copy()
    out.obs["cell_type"] = pd.Categorical(
        out.obs["cell_type"].astype(str).map(lambda c: mapping.get(c, c))
    )
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Three small studies of one program of 4 types: A and C rename the types their own way
    and lack L2_T2, which only B has; B names its cell-type column ``label``."""
    q, r = pr.datasets.simulate_pair(
        n_cells_query=600,
        n_cells_reference=300,
        n_genes=200,
        n_cell_types=4,
        n_samples_query=6,
        random_state=3,
    )
    first = q.obs["sample_id"].astype(str).isin([f"query_donor{i}" for i in (1, 2, 3)]).to_numpy()
    b = r.copy()
    b.obs["label"] = b.obs.pop("cell_type")
    studies = {
        "A": _relabel(q[first].copy(), {"L1_T1": "a1", "L1_T2": "a2", "L2_T1": "a3"}, ["L2_T2"]),
        "B": b,
        "C": _relabel(q[~first].copy(), {"L1_T1": "c1", "L1_T2": "c2", "L2_T1": "c3"}, ["L2_T2"]),
    }
    folder = tmp_path_factory.mktemp("inputs")
    for name, adata in studies.items():
        adata.write_h5ad(folder / f"{name}.h5ad")
    return folder


def _args(files, out, *extra):
    return [
        "atlas",
        *(str(files / f"{n}.h5ad") for n in "ABC"),
        "--cell-type",
        "cell_type",
        "--cell-type",
        "B=label",
        "--sample",
        "sample_id",
        "--out",
        str(out),
        "--quiet",
        *FIT,
        *extra,
    ]


@pytest.fixture(scope="module")
def cli_run(files, tmp_path_factory):
    """One run of ``pairot atlas`` on the three files (opened backed, never written)."""
    out = tmp_path_factory.mktemp("atlas") / "out"
    opened = []
    real = ad.read_h5ad

    def spy(path, *args, **kwargs):
        if Path(path).resolve().parent == Path(files).resolve():  # inputs, not DIR/studies/
            opened.append(kwargs.get("backed"))
        return real(path, *args, **kwargs)

    before = [(files / f"{n}.h5ad").read_bytes() for n in "ABC"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ad, "read_h5ad", spy)
        assert main(_args(files, out)) == 0
    assert opened == ["r", "r", "r"]
    assert [(files / f"{n}.h5ad").read_bytes() for n in "ABC"] == before
    return out


@pytest.fixture(scope="module")
def python_atlas(files):
    """The same analysis in Python, on the same files read back in memory."""
    raw = {n: ad.read_h5ad(files / f"{n}.h5ad") for n in "ABC"}
    studies = pr.pp.preprocess_studies(
        raw,
        {"A": "cell_type", "B": "label", "C": "cell_type"},
        "sample_id",
        n_top_genes=80,
        store_pseudobulk=False,
    )
    atlas = pr.tl.AtlasMap(studies, init_geom=GEOM, init_problem=PROBLEM).solve(progress=False)
    return atlas


def _plain(frame):
    out = frame.copy()
    out.attrs = {}
    return out


def test_tables_equal_atlas_map_in_python(cli_run, python_atlas):
    table = python_atlas.harmonize()
    got = pd.read_csv(cli_run / "harmonization.csv", keep_default_na=False, na_values=[""])
    got["joined"] = got["joined"].fillna("")  # an empty CSV field: no study joined
    expected = _plain(table).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_names=False)
    assert list(got["B"]) == ["L1_T1", "L1_T2", "L2_T1", "L2_T2"]
    assert list(got["relation"]) == ["one-to-one"] * 3 + ["unique"]
    parquet = pd.read_parquet(cli_run / "harmonization.parquet")
    pd.testing.assert_frame_equal(parquet, expected, check_names=False)
    links = pd.read_csv(cli_run / "links.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(
        links, _plain(python_atlas.links()), check_dtype=False, check_exact=False, rtol=1e-12
    )
    disagreements = pd.read_csv(cli_run / "disagreements.csv")
    assert list(disagreements["clusters"]) == list(python_atlas.disagreements()["clusters"])
    for a, b in [("A", "B"), ("A", "C"), ("B", "C")]:
        folder = cli_run / "pairs" / f"{a}__{b}"
        for x, y in ((a, b), (b, a)):
            pd.testing.assert_frame_equal(
                pd.read_parquet(folder / f"mapping_{x}_to_{y}.parquet"),
                python_atlas.mapping(x, y),
                check_exact=True,
            )
            unmatched = pd.read_csv(folder / f"unmatched_{x}.csv", index_col=0)
            np.testing.assert_array_equal(
                unmatched["unmatched"], python_atlas.unmatched(x, y)["unmatched"]
            )
        pd.testing.assert_frame_equal(
            pd.read_parquet(folder / "distance.parquet"),
            python_atlas.distance(a, b),
            check_exact=True,
        )


def test_run_json_and_resume_fit_nothing(cli_run, files, tmp_path, monkeypatch):
    info = json.loads((cli_run / "run.json").read_text())
    assert info["command"] == "atlas"
    assert [(p["query"], p["reference"], p["status"]) for p in info["data"]["pairs"]] == [
        ("A", "B", "fitted"),
        ("A", "C", "fitted"),
        ("B", "C", "fitted"),
    ]
    assert info["parameters"]["cell_type"] == {"A": "cell_type", "B": "label", "C": "cell_type"}
    assert info["versions"]["pairot"] == pr.__version__
    assert set(info["timings_s"]) >= {"read", "preprocess", "pairs", "harmonize", "total"}
    out = tmp_path / "again"
    shutil.copytree(cli_run, out)
    before = (out / "harmonization.csv").read_text()
    calls = []
    original = pr.tl.DatasetMap.solve

    def solve(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pr.tl.DatasetMap, "solve", solve)
    preprocessed = []
    real_preprocess = pr.pp.preprocess_studies

    def preprocess(*args, **kwargs):
        preprocessed.append(kwargs["out_dir"])
        return real_preprocess(*args, **kwargs)

    monkeypatch.setattr(pr.pp, "preprocess_studies", preprocess)
    assert main(_args(files, out)) == 0
    assert calls == [] and preprocessed == []  # the preprocessed files reused too
    studies = sorted(p.name for p in (out / "studies").iterdir())
    assert studies == sorted(["preprocess.json", *(f"{safe_name(n)}.h5ad" for n in "ABC")])
    again = json.loads((out / "run.json").read_text())
    assert {p["status"] for p in again["data"]["pairs"]} == {"loaded"}
    assert again["data"]["resumed"] is True
    assert (out / "harmonization.csv").read_text() == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    # two of the stored pairs: loaded, nothing fitted, only their folders written
    assert main(_args(files, out, "--pairs", "A:B,B:C")) == 0
    assert calls == []
    subset = json.loads((out / "run.json").read_text())["data"]["pairs"]
    assert [(p["query"], p["reference"], p["status"]) for p in subset] == [
        ("A", "B", "loaded"),
        ("B", "C", "loaded"),
    ]
    assert sorted(p.name for p in (out / "pairs").iterdir()) == ["A__B", "B__C"]
    # an input file touched: preprocessed again, to the same studies (the fits still load)
    stat = (files / "B.h5ad").stat()
    os.utime(files / "B.h5ad", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert main(_args(files, out, "--pairs", "A:B")) == 0
    assert preprocessed == [out.absolute() / "studies"] and calls == []


def _count_solves(monkeypatch, fail_at: int | None = None) -> list:
    calls = []
    original = pr.tl.DatasetMap.solve

    def solve(self, *args, **kwargs):
        calls.append(1)
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pr.tl.DatasetMap, "solve", solve)
    return calls


def test_an_interrupted_run_resumes_from_its_finished_pairs(files, tmp_path, monkeypatch, capfd):
    """Interrupted in the second pair (a pair is three solves: the fit and two relaxed ones
    for the no-match flags): the first pair is stored, nothing else is; the next run loads
    it and fits the rest. --overwrite then discards the stored fits."""
    out = tmp_path / "out"
    calls = _count_solves(monkeypatch, fail_at=4)
    from pairot import _interrupt

    # the one interrupt line of this process, as in a fresh one (other tests ran before)
    monkeypatch.setattr(_interrupt, "_announced", False)
    monkeypatch.setattr(_interrupt, "_committed", [])
    assert main(_args(files, out, "--pairs", "A:B,A:C")) == 130
    assert len(calls) == 4
    line = capfd.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("pairot: interrupted; the pairs finished so far are kept in")
    assert "run the same command again to resume" in line
    assert sorted(p.name for p in out.iterdir()) == ["fits", "studies"]  # no run.json
    assert len(list((out / "fits" / "pairs").glob("*/pair.json"))) == 1
    monkeypatch.undo()
    calls = _count_solves(monkeypatch)
    assert main(_args(files, out, "--pairs", "A:B,A:C")) == 0
    assert len(calls) == 3  # one pair fitted
    pairs = json.loads((out / "run.json").read_text())["data"]["pairs"]
    assert [(p["query"], p["reference"], p["status"]) for p in pairs] == [
        ("A", "B", "loaded"),
        ("A", "C", "fitted"),
    ]
    monkeypatch.undo()
    calls = _count_solves(monkeypatch, fail_at=1)
    assert main(_args(files, out, "--pairs", "A:B,A:C", "--overwrite")) == 130
    assert list((out / "fits" / "pairs").glob("*/pair.json")) == []
    assert not (out / "run.json").exists()


def test_report_is_offline_and_holds_the_picture(cli_run):
    text = (cli_run / "report.html").read_text(encoding="utf-8")
    assert "<script" not in text
    inline = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(inline) == 1
    import base64

    assert base64.b64decode(inline[0]) == (cli_run / "atlas.png").read_bytes()
    without = re.sub(r'src="data:image/png;base64,[A-Za-z0-9+/=]*"', "", text)
    assert re.findall(r"https?:", without) == []
    assert re.findall(r"<[a-z]+\b[^>]*\b(?:src|href|data)\s*=", without) == []
    for fragment in ("Harmonization table", "Disagreements", "A &harr; B"):
        assert fragment in text
    disagreements = pd.read_csv(cli_run / "disagreements.csv")
    assert "flagged_but_matched" in set(disagreements["kind"])
    for kind in disagreements["kind"]:  # every disagreement is shown
        assert kind in text
    assert "<td><b>unique</b></td>" in text
    table = pd.read_csv(cli_run / "harmonization.csv", keep_default_na=False)
    for study in "ABC":  # every cluster of the table is in the report's table
        for cluster in set(table[study]) - {"NONE"}:
            assert f"<td>{cluster}</td>" in text


# ----------------------------------------------------------------------------- bad input
def _one_line(capsys, *fragments):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pairot: error:"), err
    for fragment in fragments:
        assert fragment in err[0], err[0]


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (lambda a, f: a[:2] + a[4:], ["at least two studies", "pairot run"]),
        (lambda a, f: [*a[:1], str(f / "missing.h5ad"), *a[2:]], ["does not exist"]),
        (lambda a, f: [*a, "--names", "X,Y"], ["--names gives 2 name(s)", "3 FILE(s)"]),
        (lambda a, f: [*a, "--names", "X,x,Y"], ["two studies are named 'x'"]),
        (lambda a, f: [*a, "--names", "A,B__C,D"], ["'B__C'", "--names"]),
        (lambda a, f: [*a, "--names", "A,relation,C"], ["'relation'", "--names"]),
        (lambda a, f: [*a[:5], "no_such", *a[6:]], ["--cell-type 'no_such'", "study 'A'"]),
        (lambda a, f: [*a, "--sample", "B=donor"], ["--sample 'donor'", "study 'B'"]),
        (lambda a, f: [*a, "--reference", "Z"], ["--reference 'Z' is not a study"]),
        (lambda a, f: [*a, "--pairs", "A:Z"], ["--pairs has the entry 'A:Z'"]),
        (lambda a, f: [*a, "--counts", "C=nowhere"], ["--counts", "'nowhere'"]),
    ],
)
def test_bad_input_is_one_line(files, tmp_path, capsys, change, fragments):
    out = tmp_path / "out"
    assert main(change(_args(files, out), files)) == 2
    _one_line(capsys, *fragments)
    assert not out.exists()


def test_a_foreign_folder_is_refused(files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(_args(files, out)) == 2
    _one_line(capsys, "holds no pairot output")
    (out / "run.json").write_text("{}")
    assert main(_args(files, out)) == 2
    _one_line(capsys, "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "run.json"]


def test_per_study_values_and_help(capsys):
    from pairot.cli import CLIError, _per_study

    names = ["A", "B", "C"]
    assert _per_study(["ct", "B=label"], "--cell-type", names, None) == {
        "A": "ct",
        "B": "label",
        "C": "ct",
    }
    # text before '=' that is no study name is a column name
    assert _per_study(["x=y"], "--cell-type", names, None) == dict.fromkeys(names, "x=y")
    assert _per_study(None, "--counts", names, "X") == dict.fromkeys(names, "X")
    with pytest.raises(CLIError, match="given twice for all studies"):
        _per_study(["a", "b"], "--sample", names, None)
    with pytest.raises(CLIError, match="two values"):
        _per_study(["A=a", "A=b"], "--sample", names, None)
    with pytest.raises(SystemExit):
        main(["atlas", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("NAME=VALUE for study NAME only", "--reference NAME", "--pairs", "resume"):
        assert words in text


def test_the_atlas_command_defaults_are_atlas_maps():
    """``pairot atlas`` without method options fits what ``AtlasMap()`` fits."""
    from pairot._atlas_defaults import ATLAS_DEFAULTS
    from pairot.cli import build_parser

    args = build_parser().parse_args(
        ["atlas", "A.h5ad", "B.h5ad", "--cell-type", "ct", "--sample", "s", "--out", "d"]
    )
    problem = ATLAS_DEFAULTS["init_problem"]
    assert (args.tau_a, args.tau_b) == (problem["tau_a"], problem["tau_b"]) == (0.95, 0.95)
    assert args.marginals == problem["marginals_distribution"] == "uniform"
    assert args.label_distance_mode == ATLAS_DEFAULTS["init_geom"]["label_distance_mode"]
    columns = ["--query-cell-type", "c", "--ref-cell-type", "c", "--query-sample", "s"]
    columns += ["--ref-sample", "s"]
    run = build_parser().parse_args(["run", "q.h5ad", "r.h5ad", *columns, "--out", "d"])
    assert (run.tau_a, run.label_distance_mode) == (1.0, "pairot")  # pairot run: published


def test_n_samples_downsamples_the_study_files(files, tmp_path):
    """--n-samples: each study's file downsampled to at most N cells per cluster (as
    pr.pp.downsample_indices draws them), written to DIR/studies/downsampled/ and fitted."""
    out = tmp_path / "out"
    assert main(_args(files, out, "--n-samples", "40", "--pairs", "A:B")) == 0
    info = json.loads((out / "run.json").read_text())["data"]["studies"]
    for name, column in (("A", "cell_type"), ("B", "label"), ("C", "cell_type")):
        labels = ad.read_h5ad(files / f"{name}.h5ad").obs[column].astype(str)
        expected = {str(k): min(int(v), 40) for k, v in labels.value_counts().items()}
        assert info[name]["cells_per_cluster_fit"] == expected
        assert info[name]["n_cells_fit"] == sum(expected.values())
    written = sorted(p.name for p in (out / "studies" / "downsampled").iterdir())
    assert written == sorted(f"{safe_name(n)}.h5ad" for n in "ABC")
