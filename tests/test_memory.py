"""Memory budget: fake /proc and cgroup trees for every source, then a real php-fpm."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from autoscaler.errors import ConfigError
from autoscaler.memory import (
    LIMIT_CGROUP_V1,
    LIMIT_CGROUP_V2,
    LIMIT_MEMINFO,
    LIMIT_SETTING,
    LIMIT_UNKNOWN,
    WORKER_LAST_REQUEST_MEMORY,
    WORKER_PSS,
    WORKER_SETTING,
    MemoryEstimator,
    MemorySettings,
    find_pool_workers,
    parse_proc_cgroup,
    percentile_90,
    read_pss_bytes,
)
from autoscaler.settings import load_settings, parse_byte_size
from autoscaler.status.fastcgi import fastcgi_request, request_params
from autoscaler.status.model import PoolSample, WorkerSample
from tests.conftest import requires_fpm
from tests.fpm import FpmServer, PoolSpec

MIB = 1024**2
GIB = 1024**3
MASTER = 100
V1_UNLIMITED = "9223372036854771712"


class FakeHost:
    """A fake /proc and /sys/fs/cgroup under tmp_path."""

    def __init__(self, root: Path, mem_total_bytes: int | None = 16 * GIB) -> None:
        self.proc = root / "proc"
        self.cgroup = root / "cgroup"
        self.proc.mkdir()
        self.cgroup.mkdir()
        if mem_total_bytes is not None:
            (self.proc / "meminfo").write_text(
                f"MemTotal:       {mem_total_bytes // 1024} kB\nMemFree:         1000 kB\n"
            )
        self.self_cgroup("0::/\n")
        self.process(MASTER, "php-fpm: master process (/etc/php/fpm.conf)", parent=1)

    def self_cgroup(self, text: str) -> None:
        (self.proc / "self").mkdir(exist_ok=True)
        (self.proc / "self" / "cgroup").write_text(text)

    def process(
        self,
        pid: int,
        title: str,
        *,
        parent: int = MASTER,
        pss_kib: int | None = None,
        cgroup: str | None = None,
        pad: int = 40,
    ) -> None:
        folder = self.proc / str(pid)
        folder.mkdir()
        # php-fpm writes its title over the original arguments and pads with NULs.
        (folder / "cmdline").write_bytes(title.encode() + b"\0" * pad)
        # Field 4 is the parent PID, field 22 the start time in clock ticks.
        stat = f"{pid} (php-fpm8.2) S {parent} {pid} {pid} 0 -1 " + "0 " * 15 + "4242 0\n"
        (folder / "stat").write_text(stat)
        (folder / "status").write_text("Name:\tphp-fpm8.2\nUid:\t0\t0\t0\t0\n")
        if pss_kib is not None:
            (folder / "smaps_rollup").write_text(
                "55d0c0000000-7ffd00000000 ---p 00000000 00:00 0    [rollup]\n"
                f"Rss:               {pss_kib * 3} kB\nPss:               {pss_kib} kB\n"
                "Pss_Anon:           100 kB\n"
            )
        if cgroup is not None:
            (folder / "cgroup").write_text(cgroup)

    def cgroup_file(self, relative: str, content: str) -> None:
        path = self.cgroup / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n")

    def master_cgroup(self, text: str) -> None:
        (self.proc / str(MASTER) / "cgroup").write_text(text)

    def estimator(
        self, settings: MemorySettings | None = None, **kwargs: object
    ) -> MemoryEstimator:
        return MemoryEstimator(
            settings or MemorySettings(),
            proc_root=self.proc,
            cgroup_root=self.cgroup,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


def pool_sample(*peaks: int | None, pool: str = "www") -> PoolSample:
    workers = tuple(
        WorkerSample(pid=1000 + i, state="Running" if peak == 0 else "Idle",
                     last_request_memory_bytes=peak)
        for i, peak in enumerate(peaks)
    )
    return PoolSample(
        pool=pool, process_manager="dynamic", start_time_seconds=0.0, start_since_seconds=10,
        accepted_connections_total=1, listen_queue=0, max_listen_queue=0, listen_queue_length=0,
        idle_processes=len(peaks), active_processes=0, total_processes=len(peaks),
        max_active_processes=1, max_children_reached_total=0, slow_requests_total=0,
        workers=workers,
    )


# byte sizes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2147483648", 2 * GIB),
        ("2Gi", 2 * GIB),
        ("2GiB", 2 * GIB),
        ("512Mi", 512 * MIB),
        ("512M", 512_000_000),
        ("1.5Gi", 1536 * MIB),
        ("64 Ki", 64 * 1024),
        ("100k", 100_000),
        ("1T", 10**12),
        ("7B", 7),
    ],
)
def test_parse_byte_size_accepts(text: str, expected: int) -> None:
    assert parse_byte_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "2X", "512m", "1.5.2", "Gi"])
def test_parse_byte_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="byte size|suffix|ambiguous"):
        parse_byte_size(text)


def test_settings_read_byte_suffixes() -> None:
    settings = load_settings({
        "PHPFPM_AUTOSCALER_MODE": "recommend",
        "PHPFPM_AUTOSCALER_MEMORY_LIMIT_BYTES": "2Gi",
        "PHPFPM_AUTOSCALER_MEMORY_RESERVE_BYTES": "300Mi",
        "PHPFPM_AUTOSCALER_WORKER_MEMORY_BYTES": "48000000",
    })
    memory = MemorySettings.from_settings(settings)
    assert memory.limit_bytes == 2 * GIB
    assert memory.reserve_bytes == 300 * MIB
    assert memory.worker_bytes == 48_000_000
    assert memory.margin_ratio == pytest.approx(0.1)


def test_settings_reject_bad_limit() -> None:
    with pytest.raises(ConfigError, match="PHPFPM_AUTOSCALER_MEMORY_LIMIT_BYTES='512m'"):
        load_settings({"PHPFPM_AUTOSCALER_MODE": "recommend",
                       "PHPFPM_AUTOSCALER_MEMORY_LIMIT_BYTES": "512m"})


# memory limit ----------------------------------------------------------


def test_setting_wins_over_cgroup(host: FakeHost) -> None:
    host.master_cgroup("0::/ctr\n")
    host.cgroup_file("ctr/memory.max", str(512 * MIB))
    limit = host.estimator(MemorySettings(limit_bytes=GIB)).memory_limit()
    assert limit.limit_bytes == GIB
    assert limit.source == LIMIT_SETTING


def test_cgroup_v2_limit(host: FakeHost) -> None:
    host.master_cgroup("0::/kubepods/pod1/php\n")
    host.cgroup_file("kubepods/pod1/php/memory.max", str(512 * MIB))
    host.cgroup_file("kubepods/pod1/memory.max", "max")
    limit = host.estimator(master_pid=MASTER).memory_limit()
    assert limit.limit_bytes == 512 * MIB
    assert limit.source == LIMIT_CGROUP_V2
    assert limit.path == str(host.cgroup / "kubepods/pod1/php/memory.max")


def test_cgroup_v2_parent_limit_is_lower(host: FakeHost) -> None:
    host.master_cgroup("0::/kubepods/pod1/php\n")
    host.cgroup_file("kubepods/pod1/php/memory.max", "max")
    host.cgroup_file("kubepods/pod1/memory.max", str(768 * MIB))
    limit = host.estimator(master_pid=MASTER).memory_limit()
    assert limit.limit_bytes == 768 * MIB
    assert limit.source == LIMIT_CGROUP_V2


def test_cgroup_v2_max_means_no_limit(host: FakeHost) -> None:
    host.master_cgroup("0::/php\n")
    host.cgroup_file("php/memory.max", "max")
    limit = host.estimator(master_pid=MASTER).memory_limit()
    assert limit.source == LIMIT_MEMINFO
    assert limit.limit_bytes == 16 * GIB


def test_cgroup_v2_namespace_root(host: FakeHost) -> None:
    # With a cgroup namespace (Docker's default on cgroup v2) /proc shows the
    # process's own cgroup as "/" and its files at the top of the mount.
    host.master_cgroup("0::/\n")
    host.cgroup_file("memory.max", str(GIB))
    limit = host.estimator(master_pid=MASTER).memory_limit()
    assert limit.limit_bytes == GIB
    assert limit.source == LIMIT_CGROUP_V2


def test_cgroup_v1_limit(host: FakeHost) -> None:
    host.master_cgroup("12:pids:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    host.cgroup_file("memory/docker/abc/memory.limit_in_bytes", str(GIB))
    host.cgroup_file("memory/docker/memory.limit_in_bytes", V1_UNLIMITED)
    host.cgroup_file("memory/memory.limit_in_bytes", V1_UNLIMITED)
    limit = host.estimator(master_pid=MASTER).memory_limit()
    assert limit.limit_bytes == GIB
    assert limit.source == LIMIT_CGROUP_V1


def test_cgroup_v1_huge_value_means_no_limit(host: FakeHost) -> None:
    host.master_cgroup("4:memory:/docker/abc\n")
    host.cgroup_file("memory/docker/abc/memory.limit_in_bytes", V1_UNLIMITED)
    limit = host.estimator(master_pid=MASTER).memory_limit()
    assert limit.source == LIMIT_MEMINFO


def test_cgroup_v1_host_path_of_own_container(host: FakeHost) -> None:
    # Without a cgroup namespace /proc shows the host path, while the mount
    # shows the container's own cgroup at its top.
    host.self_cgroup("4:memory:/docker/abc\n")
    host.master_cgroup("4:memory:/docker/abc\n")
    host.cgroup_file("memory/memory.limit_in_bytes", str(GIB))
    limit = host.estimator(master_pid=MASTER).memory_limit()
    assert limit.limit_bytes == GIB
    assert limit.source == LIMIT_CGROUP_V1


def test_cgroup_of_other_container_not_visible(host: FakeHost) -> None:
    # A sidecar finds its own limit at the top of the mount, which is not
    # php-fpm's: the estimator must not take it.
    host.self_cgroup("4:memory:/docker/agent\n")
    host.master_cgroup("4:memory:/docker/php\n")
    host.cgroup_file("memory/memory.limit_in_bytes", str(64 * MIB))
    limit = host.estimator(master_pid=MASTER).memory_limit()
    assert limit.source == LIMIT_MEMINFO


def test_cgroup_path_outside_namespace(host: FakeHost) -> None:
    host.master_cgroup("0::/../php\n")
    host.cgroup_file("php/memory.max", str(GIB))
    limit = host.estimator(master_pid=MASTER).memory_limit()
    assert limit.source == LIMIT_MEMINFO


def test_hybrid_hierarchy_uses_v1(host: FakeHost) -> None:
    # Hybrid mode: the unified hierarchy has no memory controller, so there is
    # no memory.max for "0::/"; the v1 memory controller has the limit.
    host.master_cgroup("4:memory:/svc\n0::/\n")
    (host.cgroup / "unified").mkdir()
    host.cgroup_file("memory/svc/memory.limit_in_bytes", str(3 * GIB))
    limit = host.estimator(master_pid=MASTER).memory_limit()
    assert limit.limit_bytes == 3 * GIB
    assert limit.source == LIMIT_CGROUP_V1


def test_cgroup_limit_above_memtotal(host: FakeHost) -> None:
    host.master_cgroup("0::/php\n")
    host.cgroup_file("php/memory.max", str(64 * GIB))
    limit = host.estimator(master_pid=MASTER).memory_limit()
    assert limit.source == LIMIT_MEMINFO
    assert limit.limit_bytes == 16 * GIB


def test_master_found_by_command_line(host: FakeHost) -> None:
    host.master_cgroup("0::/php\n")
    host.cgroup_file("php/memory.max", str(GIB))
    estimator = host.estimator()
    assert estimator.master_pid() == MASTER
    assert estimator.memory_limit().source == LIMIT_CGROUP_V2


def test_no_master_falls_back_to_meminfo(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = FakeHost(tmp_path)
    (host.proc / str(MASTER) / "cmdline").write_bytes(b"nginx: master process\0")
    with caplog.at_level(logging.WARNING, logger="autoscaler.memory"):
        estimator = host.estimator()
        assert estimator.memory_limit().source == LIMIT_MEMINFO
        estimator.memory_limit()
    warnings = [r for r in caplog.records if r.getMessage() == "memory_master_not_found"]
    assert len(warnings) == 1


def test_nothing_readable_means_unknown(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, mem_total_bytes=None)
    budget = host.estimator(master_pid=MASTER).budget("www", None)
    assert budget.limit_source == LIMIT_UNKNOWN
    assert budget.limit_bytes is None
    assert budget.ceiling is None


def test_parse_proc_cgroup() -> None:
    text = "12:cpu,cpuacct:/a\n4:memory:/docker/x\n1:name=systemd:/s\n0::/unified/x\n"
    assert parse_proc_cgroup(text) == ("/unified/x", "/docker/x")
    assert parse_proc_cgroup("garbage\n") == (None, None)


# per-worker memory -----------------------------------------------------


def test_workers_matched_by_exact_title(host: FakeHost) -> None:
    host.process(201, "php-fpm: pool www", pss_kib=10_000)
    host.process(202, "php-fpm: pool www", pss_kib=20_000, pad=0)
    host.process(203, "php-fpm: pool www_status", pss_kib=90_000)
    host.process(204, "php-fpm: pool www2", pss_kib=90_000)
    host.process(205, "php-fpm: pool", pss_kib=90_000)
    host.process(206, "php-fpm: pool www", parent=999, pss_kib=90_000)  # another master
    assert find_pool_workers("www", host.proc, MASTER) == [201, 202]
    assert find_pool_workers("www", host.proc) == [201, 202, 206]
    assert find_pool_workers("www_status", host.proc, MASTER) == [203]


def test_pss_p90_of_pool_workers(host: FakeHost) -> None:
    # Eleven workers: the nearest-rank 90th percentile is the 10th smallest.
    for index in range(11):
        host.process(300 + index, "php-fpm: pool www", pss_kib=1000 * (index + 1))
    host.process(400, "php-fpm: pool www_status", pss_kib=500_000)
    measured = host.estimator(master_pid=MASTER).worker_memory("www", None)
    assert measured.source == WORKER_PSS
    assert measured.worker_bytes == 10_000 * 1024
    assert measured.workers == 11


def test_larger_of_pss_and_request_peak(host: FakeHost) -> None:
    # Fresh workers have a small PSS; the requests' allocator peak shows
    # what a worker reaches while serving one.
    host.process(201, "php-fpm: pool www", pss_kib=300)
    host.process(202, "php-fpm: pool www", pss_kib=2 * 1024)
    estimator = host.estimator(MemorySettings(allocator_to_rss_ratio=1.2), master_pid=MASTER)
    larger_peak = estimator.worker_memory("www", pool_sample(20 * MIB, 0))
    assert larger_peak.source == WORKER_LAST_REQUEST_MEMORY
    assert larger_peak.worker_bytes == math.ceil(20 * MIB * 1.2)
    smaller_peak = estimator.worker_memory("www", pool_sample(MIB))
    assert smaller_peak.source == WORKER_PSS
    assert smaller_peak.worker_bytes == 2 * MIB


def test_unreadable_smaps_rollup_falls_back_to_status(host: FakeHost) -> None:
    host.process(201, "php-fpm: pool www")  # no smaps_rollup: as for another user's process
    settings = MemorySettings(allocator_to_rss_ratio=1.5)
    sample = pool_sample(4 * MIB, 0, 8 * MIB, None, 2 * MIB)
    measured = host.estimator(settings, master_pid=MASTER).worker_memory("www", sample)
    assert measured.source == WORKER_LAST_REQUEST_MEMORY
    # 0 (running) and None (missing) are ignored; p90 of {2, 4, 8} MiB is 8 MiB.
    assert measured.workers == 3
    assert measured.worker_bytes == math.ceil(8 * MIB * 1.5)


def test_smaps_rollup_as_directory_is_unreadable(host: FakeHost) -> None:
    host.process(201, "php-fpm: pool www")
    (host.proc / "201" / "smaps_rollup").mkdir()
    assert read_pss_bytes(201, host.proc) is None


def test_worker_setting_without_any_figure(host: FakeHost) -> None:
    settings = MemorySettings(worker_bytes=48 * MIB)
    estimator = host.estimator(settings, master_pid=MASTER)
    assert estimator.worker_memory("www", None).source == WORKER_SETTING
    assert estimator.worker_memory("www", pool_sample(0, 0)).worker_bytes == 48 * MIB
    without_full = pool_sample()
    assert estimator.worker_memory("www", without_full).source == WORKER_SETTING


def test_budget_ceiling(host: FakeHost) -> None:
    host.process(201, "php-fpm: pool www", pss_kib=40 * 1024)
    settings = MemorySettings(limit_bytes=2 * GIB, reserve_bytes=256 * MIB, margin_ratio=0.1)
    budget = host.estimator(settings, master_pid=MASTER).budget("www", None)
    assert budget.worker_bytes == 40 * MIB
    assert budget.worker_source == WORKER_PSS
    assert budget.ceiling == math.floor((2 * GIB - 256 * MIB) / (40 * MIB * 1.1))


def test_smoothing_keeps_window_max(host: FakeHost) -> None:
    now = [0.0]
    settings = MemorySettings(limit_bytes=GIB, worker_window_seconds=60)
    estimator = host.estimator(settings, master_pid=MASTER, clock=lambda: now[0])
    assert estimator.budget("www", pool_sample(10 * MIB)).worker_bytes == math.ceil(12 * MIB)
    now[0] = 30.0
    assert estimator.budget("www", pool_sample(4 * MIB)).worker_bytes == math.ceil(12 * MIB)
    now[0] = 61.0
    # The 10 MiB figure left the window; the 4 MiB one from 30 s is still in it.
    assert estimator.budget("www", pool_sample(2 * MIB)).worker_bytes == math.ceil(4 * MIB * 1.2)
    now[0] = 200.0
    assert estimator.budget("www", pool_sample(2 * MIB)).worker_bytes == math.ceil(2 * MIB * 1.2)


def test_smoothing_per_pool(host: FakeHost) -> None:
    now = [0.0]
    estimator = host.estimator(MemorySettings(limit_bytes=GIB), master_pid=MASTER,
                               clock=lambda: now[0])
    estimator.budget("www", pool_sample(50 * MIB))
    assert estimator.budget("api", pool_sample(2 * MIB)).worker_bytes == math.ceil(2 * MIB * 1.2)


def test_smoothing_shares_measured_window(host: FakeHost) -> None:
    now = [0.0]
    estimator = host.estimator(MemorySettings(limit_bytes=GIB), master_pid=MASTER,
                               clock=lambda: now[0])
    estimator.budget("www", pool_sample(50 * MIB))
    # PSS becomes readable and is lower: the status page figure stays the max.
    host.process(201, "php-fpm: pool www", pss_kib=5 * 1024)
    now[0] = 1.0
    budget = estimator.budget("www", None)
    assert budget.worker_source == WORKER_LAST_REQUEST_MEMORY
    assert budget.worker_bytes == math.ceil(50 * MIB * 1.2)


def test_measured_figure_replaces_setting(host: FakeHost) -> None:
    now = [0.0]
    settings = MemorySettings(limit_bytes=GIB, worker_bytes=64 * MIB)
    estimator = host.estimator(settings, master_pid=MASTER, clock=lambda: now[0])
    assert estimator.budget("www", None).worker_source == WORKER_SETTING
    host.process(201, "php-fpm: pool www", pss_kib=5 * 1024)
    now[0] = 1.0
    budget = estimator.budget("www", None)
    assert budget.worker_source == WORKER_PSS
    assert budget.worker_bytes == 5 * MIB


def test_source_change_logged_once(host: FakeHost, caplog: pytest.LogCaptureFixture) -> None:
    estimator = host.estimator(MemorySettings(limit_bytes=GIB), master_pid=MASTER)
    with caplog.at_level(logging.INFO, logger="autoscaler.memory"):
        for _ in range(3):
            estimator.budget("www", None)
        estimator.budget("www", pool_sample(4 * MIB))
    events = [r for r in caplog.records if r.getMessage() == "memory_sources"]
    assert [r.fields["worker_source"] for r in events] == [WORKER_SETTING,  # type: ignore[attr-defined]
                                                          WORKER_LAST_REQUEST_MEMORY]


@pytest.mark.parametrize(
    ("values", "expected"),
    [([5], 5), ([3, 1, 2], 3), (list(range(1, 11)), 9), (list(range(1, 12)), 10),
     (list(range(1, 101)), 90)],
)
def test_percentile_90_nearest_rank(values: list[int], expected: int) -> None:
    assert percentile_90(values) == expected


# real php-fpm ------------------------------------------------------------


def status_json(server: FpmServer, *, via_status_listen: bool = False) -> dict[str, object]:
    if via_status_listen:
        # The hidden "www_status" pool is ondemand: this request forks its worker.
        response = asyncio.run(fastcgi_request(
            request_params("/status", "json&full"), host="127.0.0.1",
            port=server.pool("www").status_port, timeout_seconds=10,
        ))
    else:
        response = server.request_sync("/status", "json&full")
    return json.loads(response.body)  # type: ignore[no-any-return]


def sample_from_json(data: dict[str, object]) -> PoolSample:
    processes = data["processes"]
    assert isinstance(processes, list)
    workers = tuple(
        WorkerSample(
            pid=p["pid"], state=p["state"], last_request_memory_bytes=p["last request memory"]
        )
        for p in processes
    )
    return PoolSample(
        pool=str(data["pool"]), process_manager=str(data["process manager"]),
        start_time_seconds=None, start_since_seconds=None, accepted_connections_total=None,
        listen_queue=None, max_listen_queue=None, listen_queue_length=None, idle_processes=None,
        active_processes=None, total_processes=None, max_active_processes=None,
        max_children_reached_total=None, slow_requests_total=None, workers=workers,
    )


def status_after_requests(server: FpmServer, **kwargs: bool) -> dict[str, object]:
    """Read the full status page once a worker reports its last request's memory.

    A worker that has sent its reply can still show as busy for a moment,
    with "last request memory" 0, so the page is read again a few times.
    """
    for _ in range(50):
        data = status_json(server, **kwargs)
        if any(p["last request memory"] for p in data["processes"]):  # type: ignore[attr-defined]
            return data
        time.sleep(0.05)
    raise AssertionError(f"no worker reported its last request memory: {data}")


def load_workers(server: FpmServer, workers: int) -> None:
    """Make every worker run one request that keeps 20 MiB, all at the same time."""
    async def burst() -> None:
        await asyncio.gather(*(
            server.request("/work.php", "mb=20&seconds=0.5") for _ in range(workers)
        ))
    asyncio.run(burst())


@requires_fpm
def test_real_workers_pss_and_ceiling(fpm_factory: Callable[..., FpmServer]) -> None:
    workers = 3
    server = fpm_factory(PoolSpec(name="www", pm="static", max_children=workers,
                                  start_servers=None, min_spare_servers=None,
                                  max_spare_servers=None, status_listen=True))
    load_workers(server, workers)
    load_workers(server, workers)

    data = status_after_requests(server, via_status_listen=True)
    status_pids = sorted(int(p["pid"]) for p in data["processes"])  # type: ignore[attr-defined]
    found = find_pool_workers("www", Path("/proc"), server.pid)
    assert found == status_pids
    # The pm.status_listen pool's worker is a child of the same master; it
    # must not count as a www worker.
    status_workers = find_pool_workers("www_status", Path("/proc"), server.pid)
    assert status_workers
    assert not set(status_workers) & set(found)

    before = [read_pss_bytes(pid, Path("/proc")) for pid in status_pids]
    settings = MemorySettings(limit_bytes=2 * GIB, reserve_bytes=256 * MIB, margin_ratio=0.1)
    # Without a status sample the PSS is the only figure.
    budget = MemoryEstimator(settings, master_pid=server.pid).budget("www", None)
    after = [read_pss_bytes(pid, Path("/proc")) for pid in status_pids]

    print(f"worker PSS before {before} after {after}; estimate {budget.worker_bytes}")
    assert None not in before
    assert None not in after
    for value in before:
        assert value is not None
        assert MIB < value < 200 * MIB
    assert budget.worker_source == WORKER_PSS
    assert budget.limit_source == LIMIT_SETTING
    # PSS splits shared pages among all processes mapping them, so other
    # processes starting or exiting move it a little between two reads.
    p90_before = percentile_90(v for v in before if v is not None)
    p90_after = percentile_90(v for v in after if v is not None)
    assert budget.worker_bytes is not None
    low, high = min(p90_before, p90_after), max(p90_before, p90_after)
    assert low - 256 * 1024 <= budget.worker_bytes <= high + 256 * 1024

    expected = math.floor((2 * GIB - 256 * MIB) / (budget.worker_bytes * (1 + 0.1)))
    assert budget.ceiling == expected
    ceiling_from_reads = math.floor((2 * GIB - 256 * MIB) / (p90_before * 1.1))
    assert abs(ceiling_from_reads - expected) <= max(1, expected // 50)

    # With the status page too, the larger figure counts.
    peaks = [p["last request memory"] for p in data["processes"]]  # type: ignore[attr-defined]
    ratio = settings.allocator_to_rss_ratio
    peak_estimate = math.ceil(percentile_90(p for p in peaks if p) * ratio)
    combined = MemoryEstimator(settings, master_pid=server.pid).budget(
        "www", sample_from_json(data)
    )
    print(f"last request memory {peaks}; combined estimate {combined.worker_bytes}")
    assert combined.worker_bytes is not None
    assert combined.worker_bytes >= peak_estimate
    assert combined.worker_bytes >= low - 256 * 1024


@requires_fpm
def test_real_status_page_fallback(fpm_factory: Callable[..., FpmServer], tmp_path: Path) -> None:
    # Read through pm.status_listen, so that no status request becomes a www
    # worker's last request.
    server = fpm_factory(PoolSpec(name="www", pm="static", max_children=2, start_servers=None,
                                  min_spare_servers=None, max_spare_servers=None,
                                  status_listen=True))
    load_workers(server, 2)
    data = status_after_requests(server, via_status_listen=True)
    peaks = [int(p["last request memory"]) for p in data["processes"]  # type: ignore[attr-defined]
             if p["last request memory"]]
    # An empty /proc: the workers' PSS cannot be read, as for another user's workers.
    empty_proc = tmp_path / "empty-proc"
    empty_proc.mkdir()
    settings = MemorySettings(limit_bytes=GIB, allocator_to_rss_ratio=1.2)
    estimator = MemoryEstimator(settings, proc_root=empty_proc, master_pid=server.pid)
    budget = estimator.budget("www", sample_from_json(data))
    print(f"last request memory {peaks}; estimate {budget.worker_bytes}")
    assert peaks, data
    # The script kept 20 MiB of strings; PHP's allocator peak is at least that.
    assert min(peaks) >= 20 * MIB
    assert budget.worker_source == WORKER_LAST_REQUEST_MEMORY
    assert budget.worker_bytes == math.ceil(percentile_90(peaks) * 1.2)
