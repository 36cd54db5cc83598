"""The ``simulate`` subcommand end to end, through ``autoscaler.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoscaler.cli import main


def test_json_lists_policy_and_fixed_runs(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "simulate",
            "--generator",
            "spike",
            "--duration-seconds",
            "600",
            "--seed",
            "3",
            "--compare",
            "static:5,ondemand:12",
            "--json",
        ]
    )
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trace"]["name"] == "spike"
    labels = [run["label"] for run in report["runs"]]
    assert labels == ["policy (static)", "static:5", "ondemand:12"]
    for run in report["runs"]:
        assert (
            run["served_total"] + run["rejected_total"] + run["cut_total"] == run["requests_total"]
        )


def test_table_from_csv_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "access.csv"
    path.write_text(
        "timestamp_seconds,duration_seconds\n"
        + "".join(f"{i * 0.05:.2f},0.2\n" for i in range(400))
    )
    status = main(["simulate", "--trace", str(path), "--pm", "ondemand", "--compare", "static:5"])
    assert status == 0
    out = capsys.readouterr().out
    assert "400 requests" in out
    assert "policy (ondemand)" in out
    assert "static:5" in out


def test_bad_trace_line_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.csv"
    path.write_text("0,0.1\n1,zero\n")
    assert main(["simulate", "--trace", str(path)]) == 2
    assert "broken.csv line 2" in capsys.readouterr().err


def test_bad_compare_entry_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--compare", "static:five"]) == 2
    assert "--compare entry 'static:five' is invalid" in capsys.readouterr().err


def test_policy_knobs_default_from_policy_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from autoscaler.cli import build_parser
    from autoscaler.policy import PolicySettings

    args = build_parser().parse_args(["simulate"])
    assert (
        args.scale_down_stabilization_seconds == PolicySettings().scale_down_stabilization_seconds
    )
    assert args.max_children == PolicySettings().max_children
