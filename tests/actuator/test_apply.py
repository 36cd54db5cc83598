"""The applier against a real php-fpm: success, rejected candidates, a dying master, a read-only folder."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from autoscaler.actuator.apply import Applier
from autoscaler.actuator.backends import SignalBackend
from autoscaler.errors import StatusError
from autoscaler.fpmconfig.rules import PmSettings
from autoscaler.fpmconfig.tester import run_config_test
from autoscaler.status import StatusReader
from autoscaler.status.uri import parse_status_uri
from tests.conftest import requires_fpm
from tests.fpm import FpmServer, PoolSpec

pytestmark = requires_fpm

DYNAMIC = PmSettings(pm="dynamic", max_children=5, start_servers=1, min_spare_servers=1, max_spare_servers=2)


def make_applier(fpm: FpmServer, *, verify_timeout_seconds: float = 8.0, with_tester: bool = True) -> Applier:
    reader = StatusReader(parse_status_uri(fpm.status_url()), deadline_seconds=2.0)

    async def start_times() -> Mapping[str, float | None]:
        try:
            sample = await reader.read()
        except StatusError:
            return {"www": None}
        return {sample.pool: sample.start_time_seconds}

    async def tester() -> list[str]:
        result = await run_config_test(fpm.binary, str(fpm.conf))
        return [] if result.ok else result.messages

    return Applier(
        fpm.override,
        SignalBackend(config_file=fpm.conf),
        start_times,
        config_tester=tester if with_tester else None,
        verify_timeout_seconds=verify_timeout_seconds,
        verify_poll_seconds=0.1,
    )


def effective_max_children(fpm: FpmServer) -> int:
    args = [a for a in fpm.command() if a != "-F"] + ["-tt"]
    output = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False).stderr
    values = [line.rsplit("=", 1)[1].strip() for line in output.splitlines() if "pm.max_children =" in line]
    return int(values[-1])


@pytest.fixture
def fpm(fpm_factory: Callable[..., FpmServer]) -> FpmServer:
    return fpm_factory(PoolSpec(max_children=2, start_servers=1, min_spare_servers=1, max_spare_servers=1))


async def test_apply_reloads_and_verifies(fpm: FpmServer) -> None:
    before = (await fpm.request("/status", "json")).body
    result = await make_applier(fpm).apply({"www": DYNAMIC})
    assert result.result == "success", result
    assert fpm.alive()
    assert "pm.max_children = 5" in fpm.override.read_text()
    assert effective_max_children(fpm) == 5
    assert (await fpm.request("/status", "json")).body != before
    assert oct(fpm.override.stat().st_mode & 0o777) == "0o644"


async def test_same_content_is_not_reloaded(fpm: FpmServer) -> None:
    applier = make_applier(fpm)
    assert (await applier.apply({"www": DYNAMIC})).result == "success"
    mtime = fpm.override.stat().st_mtime_ns
    again = await applier.apply({"www": DYNAMIC})
    assert again.result == "unchanged"
    assert fpm.override.stat().st_mtime_ns == mtime


async def test_invalid_pm_values_never_written(fpm: FpmServer) -> None:
    bad = PmSettings(pm="dynamic", max_children=2, start_servers=1, min_spare_servers=1, max_spare_servers=3)
    result = await make_applier(fpm).apply({"www": bad})
    assert result.result == "validation_failed"
    assert "cannot be greater than pm.max_children(2)" in result.message
    assert not fpm.override.exists()
    assert fpm.alive()


async def test_candidate_rejected_by_fpm_is_not_reloaded(fpm: FpmServer) -> None:
    start_before = (await fpm.request("/status", "json")).body.split(b'"start since"')[0]
    # Another pool file that php-fpm rejects: php-fpm -t fails, so no reload may happen.
    (fpm.pool_dir / "broken.conf").write_text(
        "[broken]\nlisten = 127.0.0.1:1\npm = dynamic\npm.max_childern = 3\n"
    )
    result = await make_applier(fpm).apply({"www": DYNAMIC})
    assert result.result == "validation_failed"
    assert "unknown entry 'pm.max_childern'" in result.message
    assert not fpm.override.exists()
    assert fpm.alive()
    assert (await fpm.request("/status", "json")).body.split(b'"start since"')[0] == start_before


async def test_reload_that_kills_master_restores_file(fpm: FpmServer) -> None:
    applier = make_applier(fpm, with_tester=True)
    assert (await applier.apply({"www": DYNAMIC})).result == "success"
    good = fpm.override.read_text()
    # A new pool whose address another process holds: php-fpm -t passes (it
    # binds nothing), but the reloaded master fails to bind and exits.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (fpm.pool_dir / "other.conf").write_text(
            f"[other]\nlisten = 127.0.0.1:{port}\npm = static\npm.max_children = 1\n"
            + ("user = root\ngroup = root\n" if os.geteuid() == 0 else "")
        )
        result = await applier.apply({"www": PmSettings("dynamic", 7, 1, 1, 2)})
    assert result.result == "reload_failed", result
    assert result.fpm_down
    assert not fpm.alive()
    assert fpm.override.read_text() == good


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    folder = tmp_path / "ro"
    folder.mkdir()
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True, check=False)


async def test_override_folder_turning_read_only(fpm: FpmServer, read_only_dir: Path) -> None:
    applier = make_applier(fpm)
    applier.override_file = read_only_dir / "zz-autoscaler.conf"
    first = await applier.apply({"www": DYNAMIC})
    assert first.result in ("success", "rolled_back", "reload_failed")
    mounted = subprocess.run(["mount", "--bind", str(read_only_dir), str(read_only_dir)], capture_output=True)
    remounted = subprocess.run(["mount", "-o", "remount,bind,ro", str(read_only_dir)], capture_output=True)
    if mounted.returncode or remounted.returncode:
        pytest.skip(f"bind mounts unavailable: {mounted.stderr!r} {remounted.stderr!r}")
    before = (await fpm.request("/status", "json")).body.split(b'"start since"')[0]
    result = await applier.apply({"www": PmSettings("dynamic", 9, 1, 1, 2)})
    assert result.result == "reload_failed"
    assert "Read-only file system" in result.message
    assert not result.fpm_down
    assert fpm.alive()
    assert (await fpm.request("/status", "json")).body.split(b'"start since"')[0] == before


async def test_status_vanishing_verified_by_processes(fpm: FpmServer) -> None:
    """The status page stops replying after the reload, but the master forked new workers."""
    applier = make_applier(fpm, verify_timeout_seconds=5)
    applier.read_start_times = vanishing(applier.read_start_times)
    result = await applier.apply({"www": DYNAMIC})
    assert result.result == "success", result
    assert "pm.max_children = 5" in fpm.override.read_text()
    assert fpm.alive()


async def test_status_vanishing_without_process_view(fpm: FpmServer, tmp_path: Path) -> None:
    """Without /proc to show new workers, an unreadable status page is not trusted."""
    applier = make_applier(fpm, verify_timeout_seconds=1.5)
    applier.read_start_times = vanishing(applier.read_start_times)
    applier.proc_root = tmp_path  # an empty /proc: no process evidence
    result = await applier.apply({"www": DYNAMIC})
    # The change is not trusted without a new start time: the previous
    # (absent) file is restored and php-fpm reloaded again.
    assert result.result in ("rolled_back", "reload_failed")
    assert "no new start time" in result.message
    # php-fpm itself is alive, so it is not reported down.
    assert not result.fpm_down
    assert fpm.alive()
    assert not fpm.override.exists()


def vanishing(real: Callable[[], Any]) -> Callable[[], Any]:
    """Wrap a start-time reader: the first read (before the reload) works, later ones fail."""
    calls = 0

    async def read() -> Mapping[str, float | None]:
        nonlocal calls
        calls += 1
        return await real() if calls == 1 else {"www": None}

    return read


async def test_saturated_unix_pool_verified_by_processes(fpm_factory: Callable[..., FpmServer]) -> None:
    """Status read through a saturated unix-socket pool times out; the reload is still confirmed."""
    fpm = fpm_factory(
        PoolSpec(listen="unix", max_children=1, start_servers=1, min_spare_servers=1, max_spare_servers=1)
    )
    applier = make_applier(fpm, verify_timeout_seconds=20)
    applier.read_start_times = short_deadline_reader(fpm)
    load = [asyncio.create_task(fpm.request("/work.php", "seconds=4", timeout_seconds=60)) for _ in range(6)]
    await asyncio.sleep(0.5)
    result = await applier.apply({"www": DYNAMIC})
    responses = await asyncio.gather(*load)
    assert result.result == "success", result
    assert all(r.status == 200 and r.body.endswith(b"END\n") for r in responses)
    assert fpm.alive()


def short_deadline_reader(fpm: FpmServer) -> Callable[[], Any]:
    reader = StatusReader(parse_status_uri(fpm.status_url()), deadline_seconds=0.5)

    async def read() -> Mapping[str, float | None]:
        try:
            sample = await reader.read()
        except StatusError:
            return {"www": None}
        return {sample.pool: sample.start_time_seconds}

    return read


async def test_stop_during_verification_keeps_new_file(fpm: FpmServer, tmp_path: Path) -> None:
    """A shutdown ends the wait: the reload is reported unverified and the new file stays."""
    applier = make_applier(fpm, verify_timeout_seconds=30)
    applier.read_start_times = vanishing(applier.read_start_times)
    applier.proc_root = tmp_path  # no process evidence, so only the stop ends the wait
    applier.stop_requested = lambda: True
    result = await applier.apply({"www": DYNAMIC})
    assert result.result == "unverified"
    assert result.duration_seconds < 10
    assert "pm.max_children = 5" in fpm.override.read_text()
    assert fpm.alive()
