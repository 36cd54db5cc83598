"""The CSV trace reader and the seeded load generators."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from autoscaler.simulate import LoadShape, TraceError, generate, read_csv
from autoscaler.simulate.traces import parse_csv_lines


def test_csv_with_header_sorted_and_shifted(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(
        "timestamp_seconds,duration_seconds\n"
        "1700000010.5,0.2\n"
        "# a comment\n"
        "\n"
        "1700000010.0,0.1\n"
        "1700000012.0,1.5\n"
    )
    trace = read_csv(path)
    assert list(trace.arrivals_seconds) == [0.0, 0.5, 2.0]
    assert list(trace.durations_seconds) == [0.1, 0.2, 1.5]
    assert trace.duration_seconds == 2.0
    assert trace.name == "trace.csv"


def test_csv_without_header() -> None:
    trace = parse_csv_lines(["0,0.1", "1,0.2"])
    assert len(trace) == 2


def test_csv_duration_extends_the_trace() -> None:
    trace = parse_csv_lines(["0,0.1", "1,0.2"], duration_seconds=60)
    assert trace.duration_seconds == 60


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["0,0.1", "1;0.2"], "line 2: '1;0.2' has 1 fields"),
        (["0,0.1", "0.5,abc"], "line 2: duration_seconds='abc'"),
        (["t,d", "0,0.1", "x,0.2"], "line 3: timestamp_seconds='x'"),
        (["0,0.1,GET"], "line 1: '0,0.1,GET' has 3 fields"),
        (["0,-1"], "line 1: duration_seconds=-1 is negative"),
        (["0,nan"], "line 1: duration_seconds='nan' is not a finite number"),
        (["timestamp,duration"], "contains no requests"),
    ],
)
def test_csv_bad_line_names_the_line(lines: list[str], expected: str) -> None:
    with pytest.raises(TraceError) as caught:
        parse_csv_lines(lines, source="access.csv")
    assert expected in str(caught.value)
    assert "access.csv" in str(caught.value)


def test_csv_missing_file_is_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read trace file"):
        read_csv(tmp_path / "missing.csv")


def test_generator_is_deterministic_per_seed() -> None:
    shape = LoadShape(duration_seconds=300, seed=7)
    first = generate("spike", shape)
    second = generate("spike", shape)
    other = generate("spike", LoadShape(duration_seconds=300, seed=8))
    assert first.arrivals_seconds == second.arrivals_seconds
    assert first.durations_seconds == second.durations_seconds
    assert first.arrivals_seconds != other.arrivals_seconds


def test_steady_rate_and_service_mean() -> None:
    shape = LoadShape(rate_per_second=50, duration_seconds=600, mean_service_seconds=0.2, seed=4)
    trace = generate("steady", shape)
    assert len(trace) / 600 == pytest.approx(50, rel=0.03)
    assert trace.mean_service_seconds == pytest.approx(0.2, rel=0.03)
    assert list(trace.arrivals_seconds) == sorted(trace.arrivals_seconds)
    assert trace.arrivals_seconds[-1] < 600


def count_between(arrivals: list[float], start: float, end: float) -> int:
    return sum(1 for t in arrivals if start <= t < end)


def test_spike_bursts_at_the_factor() -> None:
    shape = LoadShape(rate_per_second=20, duration_seconds=900, seed=6)
    arrivals = list(generate("spike", shape).arrivals_seconds)
    # The burst runs from one third of the 900 s period for 60 s.
    burst = count_between(arrivals, 300, 360) / 60
    base = count_between(arrivals, 0, 300) / 300
    assert base == pytest.approx(20, rel=0.1)
    assert burst / base == pytest.approx(6, rel=0.15)


def test_diurnal_peaks_in_the_middle() -> None:
    shape = LoadShape(rate_per_second=20, duration_seconds=3600, seed=6)
    arrivals = list(generate("diurnal", shape).arrivals_seconds)
    night = count_between(arrivals, 0, 300) / 300
    noon = count_between(arrivals, 1650, 1950) / 300
    assert noon > 5 * night
    assert len(arrivals) / 3600 == pytest.approx(20, rel=0.05)


def test_flash_crowd_jumps_then_decays() -> None:
    shape = LoadShape(rate_per_second=10, duration_seconds=4000, seed=6)
    arrivals = list(generate("flash-crowd", shape).arrivals_seconds)
    before = count_between(arrivals, 800, 1000) / 200
    just_after = count_between(arrivals, 1000, 1100) / 100
    late = count_between(arrivals, 3800, 4000) / 200
    assert just_after / before == pytest.approx(5, rel=0.2)
    assert before < late < just_after


def test_unknown_generator_lists_the_known_ones() -> None:
    with pytest.raises(TraceError, match="use one of steady, diurnal, spike, flash-crowd"):
        generate("sawtooth", LoadShape())


def test_lognormal_spread() -> None:
    shape = LoadShape(rate_per_second=100, duration_seconds=300, mean_service_seconds=0.1, seed=9)
    durations = sorted(generate("steady", shape).durations_seconds)
    median = statistics.median(durations)
    p99 = durations[int(0.99 * len(durations))]
    # sigma 0.6: p99 / median = exp(2.326 x 0.6), about 4.0.
    assert p99 / median == pytest.approx(4.0, rel=0.15)
