import json

import pandas as pd

from pairot import __version__
from pairot.cli import main


def test_demo_writes_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n-top-genes", "100"]) == 0
    summary = json.loads((out / "run.json").read_text())
    assert summary["n_hvgs"] == 100
    de = pd.read_parquet(out / "query_de_ova.parquet")
    assert {"cluster", "gene", "logFC", "P.Value", "adj.P.Val", "auroc"} <= set(de.columns)
    assert not list(tmp_path.glob(".pairot-*"))  # no temporary folder left behind
    assert "wrote" in capsys.readouterr().out


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert __version__ in capsys.readouterr().out
