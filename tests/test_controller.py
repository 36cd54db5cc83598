"""The controller with scripted readers and a recording applier: wiring, batching, backoff, health."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from autoscaler.actuator.apply import ApplyResult
from autoscaler.controller import Controller
from autoscaler.errors import StatusAccessError, StatusError, StatusTimeoutError
from autoscaler.fpmconfig.rules import PmSettings, validate_pm
from autoscaler.metrics import Metrics
from autoscaler.policy import Direction, Reason
from autoscaler.settings import Settings, load_settings
from autoscaler.status import PoolSample
from autoscaler.status.uri import parse_status_uri


def sample(pool: str, *, busy: int, idle: int, start: float = 1000.0, reached: int = 0) -> PoolSample:
    return PoolSample(
        pool=pool,
        process_manager="dynamic",
        start_time_seconds=start,
        start_since_seconds=10,
        accepted_connections_total=100,
        listen_queue=0,
        max_listen_queue=0,
        listen_queue_length=511,
        idle_processes=idle,
        active_processes=busy,
        total_processes=busy + idle,
        max_active_processes=busy,
        max_children_reached_total=reached,
        slow_requests_total=0,
    )


class ScriptedReader:
    """Returns (or raises) the next scripted item on every read; repeats the last one."""

    def __init__(self, url: str, script: list[PoolSample | StatusError]) -> None:
        self.uri = parse_status_uri(url)
        self.script = script
        self.reads = 0

    async def read(self) -> PoolSample:
        item = self.script[min(self.reads, len(self.script) - 1)]
        self.reads += 1
        if isinstance(item, StatusError):
            raise item
        return item


class RecordingApplier:
    verify_timeout_seconds = 100.0

    def __init__(self, results: list[str] | None = None) -> None:
        self.calls: list[dict[str, PmSettings]] = []
        self.results = results or ["success"]

    async def apply(self, pools: Mapping[str, PmSettings]) -> ApplyResult:
        self.calls.append(dict(pools))
        result = self.results[min(len(self.calls) - 1, len(self.results) - 1)]
        return ApplyResult(result, 0.1, fpm_down=result == "reload_failed")


def effective_config(applier: RecordingApplier | None, defaults: dict[str, PmSettings]):
    """The effective config a php-fpm that includes the override would show: the last write wins."""

    def read() -> dict[str, PmSettings]:
        if applier is not None and applier.calls:
            return {**defaults, **applier.calls[-1]}
        return defaults

    return read


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def settings(tmp_path: Path, **values: Any) -> Settings:
    env = {
        "PHPFPM_AUTOSCALER_OVERRIDE_FILE": str(tmp_path / "zz.conf"),
        "PHPFPM_AUTOSCALER_MIN_RELOAD_INTERVAL_SECONDS": "10",
        "PHPFPM_AUTOSCALER_SCALE_UP_INTERVAL_SECONDS": "0",
    }
    env.update({f"PHPFPM_AUTOSCALER_{k.upper()}": str(v) for k, v in values.items()})
    return load_settings(env)


PM = PmSettings(pm="dynamic", max_children=4, start_servers=2, min_spare_servers=1, max_spare_servers=3)


def controller(
    tmp_path: Path, readers: list[ScriptedReader], applier: RecordingApplier | None, **values: Any
) -> tuple[Controller, FakeClock]:
    clock = FakeClock()
    names = [reader.script[0].pool for reader in readers if isinstance(reader.script[0], PoolSample)]
    ctl = Controller(
        settings(tmp_path, **values),
        readers,
        Metrics(),  # type: ignore[arg-type]
        applier=applier,  # type: ignore[arg-type]
        current_pm=effective_config(applier, {name: PM for name in names}),
        clock=clock,
        wall_clock=clock,
    )
    return ctl, clock


async def test_two_pools_scaled_in_one_reload(tmp_path: Path) -> None:
    readers = [
        ScriptedReader("tcp://127.0.0.1:9000/status", [sample("www", busy=4, idle=0)]),
        ScriptedReader("tcp://127.0.0.1:9001/status", [sample("api", busy=4, idle=0)]),
    ]
    applier = RecordingApplier()
    ctl, _ = controller(tmp_path, readers, applier)
    ctl._refresh_pm()
    decisions = await ctl.tick()
    assert [d.direction for d in decisions] == [Direction.UP, Direction.UP]
    assert len(applier.calls) == 1
    assert set(applier.calls[0]) == {"www", "api"}
    for pm in applier.calls[0].values():
        assert pm.max_children == 6
        assert validate_pm(pm) == []
    assert ctl.metrics.registry.get_sample_value("phpfpm_autoscaler_max_children", {"pool": "api"}) == 6


async def test_recommend_mode_never_applies(tmp_path: Path) -> None:
    readers = [ScriptedReader("tcp://127.0.0.1:9000/status", [sample("www", busy=4, idle=0)])]
    applier = RecordingApplier()
    ctl, _ = controller(tmp_path, readers, applier, mode="recommend")
    ctl._refresh_pm()
    decisions = await ctl.tick()
    assert decisions[0].direction is Direction.UP
    assert applier.calls == []


async def test_observe_mode_makes_no_decision(tmp_path: Path) -> None:
    readers = [ScriptedReader("tcp://127.0.0.1:9000/status", [sample("www", busy=4, idle=0)])]
    ctl, _ = controller(tmp_path, readers, RecordingApplier(), mode="observe")
    assert await ctl.tick() == []
    assert ctl.metrics.registry.get_sample_value("phpfpm_active_processes", {"pool": "www"}) == 4


async def test_failed_apply_backs_off_exponentially(tmp_path: Path) -> None:
    readers = [ScriptedReader("tcp://127.0.0.1:9000/status", [sample("www", busy=4, idle=0)])]
    applier = RecordingApplier(["rolled_back"])
    ctl, clock = controller(tmp_path, readers, applier)
    ctl._refresh_pm()
    attempts_at = []
    for second in range(0, 80):
        clock.now = float(second)
        before = len(applier.calls)
        await ctl.tick()
        if len(applier.calls) > before:
            attempts_at.append(second)
    # 10 s reload interval: retries after 10, 20, then 40 s.
    assert attempts_at == [0, 10, 30, 70]
    assert (
        ctl.metrics.registry.get_sample_value("phpfpm_autoscaler_reloads_total", {"result": "rolled_back"})
        == 4
    )


async def test_health_fails_when_fpm_down_after_reload(tmp_path: Path) -> None:
    readers = [ScriptedReader("tcp://127.0.0.1:9000/status", [sample("www", busy=4, idle=0)])]
    ctl, _ = controller(tmp_path, readers, RecordingApplier(["reload_failed"]))
    ctl._refresh_pm()
    await ctl.tick()
    ok, message = ctl.health()
    assert not ok
    assert "php-fpm is down" in message
    assert ctl.metrics.registry.get_sample_value("phpfpm_autoscaler_healthy") == 0
    # php-fpm restarted by its process manager: the next successful poll clears it.
    ctl.apply_blocked_until = float("inf")
    await ctl.tick()
    assert ctl.health()[0]
    assert ctl.metrics.registry.get_sample_value("phpfpm_autoscaler_healthy") == 1


async def test_health_fails_when_ticks_stop(tmp_path: Path) -> None:
    readers = [ScriptedReader("tcp://127.0.0.1:9000/status", [sample("www", busy=1, idle=1)])]
    ctl, clock = controller(tmp_path, readers, None)
    await ctl.tick()
    assert ctl.health()[0]
    clock.now = 1000.0
    ok, message = ctl.health()
    assert not ok
    assert "no tick completed" in message


async def test_access_error_stops_scaling_and_marks_down(tmp_path: Path) -> None:
    error = StatusAccessError("replied 'Access denied.' (403)")
    readers = [ScriptedReader("tcp://127.0.0.1:9000/status", [sample("www", busy=4, idle=0), error])]
    applier = RecordingApplier()
    ctl, clock = controller(tmp_path, readers, applier)
    ctl._refresh_pm()
    await ctl.tick()
    clock.now = 100.0
    decisions = await ctl.tick()
    assert decisions[0].reason is Reason.CONFIG_ERROR
    assert len(applier.calls) == 1
    assert ctl.metrics.registry.get_sample_value("phpfpm_up", {"pool": "www"}) == 0


@pytest.mark.parametrize("interval", [10.0])
async def test_saturation_with_status_timeouts_never_scales_down(tmp_path: Path, interval: float) -> None:
    """A static pool of 20 read through its own socket: timeouts while saturated, then a slow reply."""
    rows: list[PoolSample | StatusError] = [
        sample("www", busy=8, idle=12),
        sample("www", busy=16, idle=4),
        sample("www", busy=19, idle=1),
        StatusTimeoutError("no reply within 3 s"),
        StatusTimeoutError("no reply within 3 s"),
        StatusTimeoutError("no reply within 3 s"),
        sample("www", busy=20, idle=0),
    ]
    readers = [ScriptedReader("tcp://127.0.0.1:9000/status", rows)]
    applier = RecordingApplier()
    clock = FakeClock()
    static = PmSettings(
        pm="static", max_children=20, start_servers=None, min_spare_servers=None, max_spare_servers=None
    )
    ctl = Controller(
        settings(tmp_path, max_children=64, poll_interval_seconds=interval),
        readers,
        Metrics(),  # type: ignore[list-item]
        applier=applier,
        current_pm=lambda: {"www": static},
        clock=clock,
        wall_clock=clock,  # type: ignore[arg-type]
    )
    ctl._refresh_pm()
    directions = []
    for index in range(len(rows)):
        clock.now = index * interval
        decisions = await ctl.tick()
        directions.append(decisions[0].direction)
    assert Direction.DOWN not in directions
    # The first timeout already scales up: a status page stuck behind busy workers is saturation.
    assert directions[3] is Direction.UP
    assert all(reader.reads == len(rows) for reader in readers)


async def test_pools_share_process_max(tmp_path: Path) -> None:
    readers = [
        ScriptedReader("tcp://127.0.0.1:9000/status", [sample("www", busy=4, idle=0)]),
        ScriptedReader("tcp://127.0.0.1:9001/status", [sample("api", busy=4, idle=0)]),
    ]
    applier = RecordingApplier()
    clock = FakeClock()
    ctl = Controller(
        settings(tmp_path),
        readers,
        Metrics(),  # type: ignore[arg-type]
        applier=applier,  # type: ignore[arg-type]
        current_pm=effective_config(applier, {"www": PM, "api": PM}),
        process_max=lambda: 10,
        clock=clock,
        wall_clock=clock,
    )
    ctl._refresh_pm()
    decisions = await ctl.tick()
    assert sum(d.target for d in decisions) <= 10
    assert {d.reason for d in decisions} == {Reason.PROCESS_MAX}
    assert sum(pm.max_children for pm in applier.calls[0].values()) <= 10


async def test_dynamic_spares_follow_bursts(tmp_path: Path) -> None:
    script: list[PoolSample | StatusError] = [sample("www", busy=0, idle=4), sample("www", busy=4, idle=0)]
    readers = [ScriptedReader("tcp://127.0.0.1:9000/status", script)]
    applier = RecordingApplier()
    ctl, clock = controller(tmp_path, readers, applier)
    ctl._refresh_pm()
    await ctl.tick()
    clock.now = 1.0
    await ctl.tick()
    pm = applier.calls[0]["www"]
    assert pm.max_children == 6
    assert validate_pm(pm) == []
    # A rise of 4 busy workers in one poll: more spare workers than the
    # configured minimum of 1, so the next burst does not wait for forks.
    assert pm.min_spare_servers is not None and pm.min_spare_servers > PM.min_spare_servers


async def test_override_without_effect_backs_off(tmp_path: Path) -> None:
    """php-fpm reloads fine but another file wins: the agent notices and backs off."""
    readers = [ScriptedReader("tcp://127.0.0.1:9000/status", [sample("www", busy=4, idle=0)])]
    applier = RecordingApplier()
    clock = FakeClock()
    ctl = Controller(
        settings(tmp_path),
        readers,
        Metrics(),  # type: ignore[arg-type]
        applier=applier,  # type: ignore[arg-type]
        current_pm=lambda: {"www": PM},  # the effective value never changes
        clock=clock,
        wall_clock=clock,
    )
    ctl._refresh_pm()
    await ctl.tick()
    assert len(applier.calls) == 1
    assert ctl.tracks[0].pm == PM
    assert ctl.apply_failures == 1
    assert (
        ctl.metrics.registry.get_sample_value(
            "phpfpm_autoscaler_errors_total", {"pool": "www", "stage": "apply"}
        )
        == 1
    )


async def test_duplicate_pool_url_is_a_config_error(tmp_path: Path) -> None:
    readers = [
        ScriptedReader("tcp://127.0.0.1:9000/status", [sample("www", busy=1, idle=1)]),
        ScriptedReader("tcp://127.0.0.1:9001/status", [sample("www", busy=1, idle=1)]),
    ]
    ctl, _ = controller(tmp_path, readers, RecordingApplier())
    decisions = await ctl.tick()
    assert decisions[1].reason is Reason.CONFIG_ERROR
    assert ctl.tracks[1].name == "tcp://127.0.0.1:9001/status"


async def test_status_uri_series_dropped_once_pool_named(tmp_path: Path) -> None:
    error = StatusTimeoutError("no reply")
    readers = [ScriptedReader("tcp://127.0.0.1:9000/status", [error, sample("www", busy=1, idle=1)])]
    ctl, clock = controller(tmp_path, readers, None, mode="observe")
    await ctl.tick()
    uri = "tcp://127.0.0.1:9000/status"
    assert ctl.metrics.registry.get_sample_value("phpfpm_up", {"pool": uri}) == 0
    clock.now = 1.0
    await ctl.tick()
    assert ctl.metrics.registry.get_sample_value("phpfpm_up", {"pool": uri}) is None
    assert ctl.metrics.registry.get_sample_value("phpfpm_up", {"pool": "www"}) == 1


async def test_health_allows_long_reload_verification(tmp_path: Path) -> None:
    """A slow, rolled-back reload must not make /healthz fail while it is still within its deadlines."""
    readers = [ScriptedReader("tcp://127.0.0.1:9000/status", [sample("www", busy=1, idle=1)])]
    ctl, clock = controller(tmp_path, readers, RecordingApplier())
    await ctl.tick()
    clock.now = 150.0  # within two verifications of 100 s each
    assert ctl.health()[0]
    clock.now = 250.0
    assert not ctl.health()[0]
