"""Request traces for the simulator: a CSV reader and seeded load generators.

A trace is two parallel arrays sorted by arrival: when each request arrives
and how long a warm worker needs to serve it. Generators draw Poisson
arrivals whose rate changes once per simulated second, and lognormal
service times around a mean, from one ``random.Random(seed)``, so the same
seed always gives the same trace.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from autoscaler.errors import ConfigError


class TraceError(ConfigError):
    """A trace file or generator request that the simulator cannot use."""


@dataclass(frozen=True, slots=True)
class Trace:
    """Requests sorted by arrival; times are seconds from the start of the trace."""

    name: str
    arrivals_seconds: array[float]
    durations_seconds: array[float]
    duration_seconds: float

    def __len__(self) -> int:
        return len(self.arrivals_seconds)

    @property
    def mean_service_seconds(self) -> float:
        if not self.durations_seconds:
            return 0.0
        return math.fsum(self.durations_seconds) / len(self.durations_seconds)


# --- CSV ----------------------------------------------------------------------


def read_csv(path: Path, *, duration_seconds: float | None = None) -> Trace:
    """Read ``timestamp_seconds,duration_seconds`` lines from ``path``.

    A first line that does not parse as numbers is taken as a header; blank
    lines and lines starting with ``#`` are skipped. Timestamps may be in any
    order and on any origin (Unix time from an access log, for example): the
    trace is sorted and shifted so the first request arrives at 0.
    ``duration_seconds`` extends the trace past its last arrival.
    """
    try:
        with path.open(encoding="utf-8") as handle:
            return parse_csv_lines(handle, source=str(path), duration_seconds=duration_seconds)
    except OSError as exc:
        raise TraceError(f"cannot read trace file {path}: {exc.strerror}; check the path") from exc
    except UnicodeDecodeError as exc:
        raise TraceError(f"trace file {path} is not UTF-8 text; export it as CSV") from exc


def parse_csv_lines(
    lines: Iterable[str], *, source: str = "<trace>", duration_seconds: float | None = None
) -> Trace:
    """Parse CSV lines as :func:`read_csv` does; errors name ``source`` and the line number."""
    pairs: list[tuple[float, float]] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(",")
        if number == 1 and not pairs and _is_header(fields):
            continue
        if len(fields) != 2:
            raise TraceError(
                f"{source} line {number}: {line!r} has {len(fields)} fields; expected "
                "'timestamp_seconds,duration_seconds'"
            )
        timestamp = _number(fields[0], "timestamp_seconds", source, number, line)
        duration = _number(fields[1], "duration_seconds", source, number, line)
        if duration < 0:
            raise TraceError(
                f"{source} line {number}: duration_seconds={duration:g} is negative; "
                "expected the time the request took, 0 or more"
            )
        pairs.append((timestamp, duration))
    if not pairs:
        raise TraceError(
            f"{source} contains no requests; expected 'timestamp_seconds,duration_seconds' lines"
        )
    pairs.sort(key=lambda pair: pair[0])
    origin = pairs[0][0]
    arrivals = array("d", (timestamp - origin for timestamp, _ in pairs))
    durations = array("d", (duration for _, duration in pairs))
    end = max(arrivals[-1], duration_seconds or 0.0)
    return Trace(Path(source).name, arrivals, durations, end)


def _is_header(fields: list[str]) -> bool:
    try:
        float(fields[0])
    except ValueError:
        return True
    return False


def _number(text: str, name: str, source: str, number: int, line: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(
            f"{source} line {number}: {name}={text.strip()!r} in {line!r} is not a number; "
            "expected seconds as a decimal number"
        ) from None
    if not math.isfinite(value):
        raise TraceError(f"{source} line {number}: {name}={text.strip()!r} is not a finite number")
    return value


# --- generators ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadShape:
    """Parameters of the generated load; the defaults are the built-in traces of the docs."""

    rate_per_second: float = 20.0
    duration_seconds: float = 3600.0
    mean_service_seconds: float = 0.15
    # Spread of the lognormal service time (sigma of the underlying normal):
    # 0.6 puts the 99th percentile at about 4 x the median.
    service_sigma: float = 0.6
    seed: int = 1
    # Daily swing of the diurnal generator: the rate runs from (1 - amplitude)
    # to (1 + amplitude) times the mean over one period.
    diurnal_amplitude_ratio: float = 0.8
    # One period by default is the whole run, so a short run still shows a day.
    diurnal_period_seconds: float | None = None
    spike_factor: float = 6.0
    spike_seconds: float = 60.0
    spike_period_seconds: float = 900.0
    flash_crowd_factor: float = 5.0
    # Start and decay time constant of the flash crowd, as shares of the run.
    flash_crowd_start_ratio: float = 0.25
    flash_crowd_decay_ratio: float = 0.25


RateFunction = Callable[[float], float]


def steady_rate(shape: LoadShape) -> RateFunction:
    return lambda _t: shape.rate_per_second


def diurnal_rate(shape: LoadShape) -> RateFunction:
    """Start at the night trough, peak in the middle of the period, mean ``rate_per_second``."""
    period = shape.diurnal_period_seconds or shape.duration_seconds
    amplitude = shape.diurnal_amplitude_ratio

    def rate(t: float) -> float:
        return shape.rate_per_second * (1.0 - amplitude * math.cos(2.0 * math.pi * t / period))

    return rate


def spike_rate(shape: LoadShape) -> RateFunction:
    """Steady base with a burst of ``spike_factor`` x the rate for ``spike_seconds`` each period.

    The first burst starts one third into the first period, so a run
    starts with a calm pool.
    """
    offset = shape.spike_period_seconds / 3.0

    def rate(t: float) -> float:
        phase = (t - offset) % shape.spike_period_seconds
        if t >= offset and phase < shape.spike_seconds:
            return shape.rate_per_second * shape.spike_factor
        return shape.rate_per_second

    return rate


def flash_crowd_rate(shape: LoadShape) -> RateFunction:
    """Base rate, then a sudden jump to ``flash_crowd_factor`` x that decays exponentially."""
    start = shape.duration_seconds * shape.flash_crowd_start_ratio
    decay = max(1.0, shape.duration_seconds * shape.flash_crowd_decay_ratio)
    extra = shape.flash_crowd_factor - 1.0

    def rate(t: float) -> float:
        if t < start:
            return shape.rate_per_second
        return shape.rate_per_second * (1.0 + extra * math.exp(-(t - start) / decay))

    return rate


GENERATORS: dict[str, Callable[[LoadShape], RateFunction]] = {
    "steady": steady_rate,
    "diurnal": diurnal_rate,
    "spike": spike_rate,
    "flash-crowd": flash_crowd_rate,
}


def generate(name: str, shape: LoadShape) -> Trace:
    """Draw the trace of generator ``name``; raise TraceError for an unknown name or shape."""
    factory = GENERATORS.get(name)
    if factory is None:
        raise TraceError(f"generator {name!r} is unknown; use one of {', '.join(GENERATORS)}")
    if shape.duration_seconds <= 0 or shape.rate_per_second < 0 or shape.mean_service_seconds <= 0:
        raise TraceError(
            f"duration_seconds={shape.duration_seconds:g}, "
            f"mean_service_seconds={shape.mean_service_seconds:g} must be above 0 and "
            f"rate_per_second={shape.rate_per_second:g} at least 0"
        )
    return draw(name, factory(shape), shape)


def draw(name: str, rate_at: RateFunction, shape: LoadShape) -> Trace:
    """Draw Poisson arrivals whose rate is ``rate_at`` the middle of each second.

    Within a second the rate is constant; the exponential gap is memoryless,
    so restarting it at every second boundary keeps the process Poisson.
    """
    rng = random.Random(shape.seed)
    expovariate = rng.expovariate
    lognormvariate = rng.lognormvariate
    sigma = shape.service_sigma
    # The mean of a lognormal is exp(mu + sigma^2 / 2).
    mu = math.log(shape.mean_service_seconds) - sigma * sigma / 2.0
    arrivals = array("d")
    durations = array("d")
    add_arrival = arrivals.append
    add_duration = durations.append
    end = shape.duration_seconds
    for second in range(math.ceil(end)):
        rate = rate_at(second + 0.5)
        if rate <= 0:
            continue
        limit = min(second + 1.0, end)
        t = second + expovariate(rate)
        while t < limit:
            add_arrival(t)
            add_duration(lognormvariate(mu, sigma))
            t += expovariate(rate)
    return Trace(name, arrivals, durations, end)
