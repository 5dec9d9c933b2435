"""``pairot demo --label-distance-mode auto``: the decision reaches run.json and the report."""

from __future__ import annotations

import json

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
