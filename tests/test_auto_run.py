"""``pairot demo --label-distance-mode auto``: the decision reaches run.json and the report."""

from __future__ import annotations

import json

import pandas as pd

from pairot.cli import main


def test_auto_decision_is_recorded_in_run_json_and_report(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["demo", "--out", str(out), "--label-distance-mode", "auto", "--quiet"])
    assert code == 0, capsys.readouterr().err
    info = json.loads((out / "run.json").read_text())
    assert info["parameters"]["label_distance_mode"] == "auto"
    decision = info["data"]["label_distance_decision"]
    assert decision["label_distance"] in ("robust", "none")
    assert decision["lambda_feature"] == 1.0
    assert decision["lambda_label"] >= 0 and decision["reason"]
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "label distance (auto)" in report and "why (auto)" in report
    # the label-term diagnostics, one row per query cluster, in run.json and the report
    rows = info["data"]["label_term_diagnostics"]
    mapping = pd.read_parquet(out / "mapping.parquet")
    assert [r["query_cluster"] for r in rows] == [str(c) for c in mapping.index]
    assert {"n_markers", "saturated_share", "label_nearest", "cell_nearest", "disagree"} <= set(
        rows[0]
    )
    assert "cells&#x27; nearest" in report or "cells' nearest" in report


def test_label_term_warning_fires_when_most_rows_disagree(caplog):
    import logging

    from pairot._run import _warn_label_term

    table = pd.DataFrame(
        {
            "n_markers": [1, 2, 10, 0],
            "constant_row": [False, False, False, True],
            "disagree": [True, True, False, False],
        },
        index=["a", "b", "c", "d"],
    )
    with caplog.at_level(logging.WARNING, logger="pairot"):
        _warn_label_term(table, "pairot")
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "for 2 of the 3 query clusters" in message and "(a, b)" in message
    assert "3 clusters keep 3 markers or fewer" in message and "auto" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pairot"):
        _warn_label_term(table.assign(disagree=[True, False, False, False]), "pairot")
    assert caplog.records == []
