"""The memory budget of a pool: memory limit, reserve and per-worker memory.

This module reads /proc and /sys/fs/cgroup; the pure policy only receives the
resulting ``MemoryBudget``. Sources, in order of preference:

- memory limit: the setting, else the memory limit of php-fpm's master
  cgroup (cgroup v2 ``memory.max``, cgroup v1 ``memory.limit_in_bytes``,
  the lowest along the path to the root), else MemTotal of /proc/meminfo.
  A cgroup limit above MemTotal counts as no limit.
- per-worker memory: the larger of the 90th percentile of the pool's
  workers' PSS (/proc/PID/smaps_rollup) and the 90th percentile of ``last
  request memory`` from the full status page times a factor, whichever of
  the two is available, else a setting. The estimator keeps the highest
  value seen within a window, so the ceiling does not move on every poll.

PSS (proportional set size) splits each shared page among the processes
that map it, so the workers' PSS values add up to what they cost together,
which RSS overstates by counting shared pages in every worker.
"""

from __future__ import annotations

import logging
import math
import posixpath
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from autoscaler.actuator.process import (
    PROC_ROOT,
    MasterProcess,
    is_alive,
    read_cmdline,
    select_master,
)
from autoscaler.errors import ConfigError, ReloadError
from autoscaler.policy.types import MemoryBudget
from autoscaler.settings import Settings, env_name
from autoscaler.status.model import PoolSample

log = logging.getLogger("autoscaler.memory")

CGROUP_ROOT = Path("/sys/fs/cgroup")

# Sources, as recorded in MemoryBudget.limit_source and worker_source.
LIMIT_SETTING = "setting"
LIMIT_CGROUP_V2 = "cgroup_v2"
LIMIT_CGROUP_V1 = "cgroup_v1"
LIMIT_MEMINFO = "meminfo"
LIMIT_UNKNOWN = "unknown"
WORKER_PSS = "pss"
WORKER_LAST_REQUEST_MEMORY = "last_request_memory"
WORKER_SETTING = "setting"

# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit value
# (9223372036854771712 with 4 KiB pages); anything this large is no limit.
_V1_UNLIMITED_BYTES = 1 << 60

MIB = 1024**2


@dataclass(frozen=True, slots=True)
class MemorySettings:
    """The settings the estimator uses, separated from ``Settings`` for tests."""

    limit_bytes: int | None = None
    reserve_bytes: int = 256 * MIB
    margin_ratio: float = 0.1
    allocator_to_rss_ratio: float = 1.2
    worker_bytes: int = 64 * MIB
    worker_window_seconds: float = 300.0
    fpm_config_file: Path | None = None
    pid_file: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> MemorySettings:
        return cls(
            limit_bytes=settings.memory_limit_bytes,
            reserve_bytes=settings.memory_reserve_bytes,
            margin_ratio=settings.memory_margin_ratio,
            allocator_to_rss_ratio=settings.allocator_to_rss_ratio,
            worker_bytes=settings.worker_memory_bytes,
            worker_window_seconds=settings.worker_memory_window_seconds,
            fpm_config_file=settings.fpm_config_file,
            pid_file=settings.pid_file,
        )


@dataclass(frozen=True, slots=True)
class MemoryLimit:
    """The memory limit found, where it came from, and the file it was read from."""

    limit_bytes: int | None
    source: str
    path: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerMemory:
    """One unsmoothed per-worker memory figure and how many workers it covers."""

    worker_bytes: int
    source: str
    workers: int = 0


class MemoryEstimator:
    """Build each pool's ``MemoryBudget`` from the settings, /proc and the cgroup tree.

    ``master_pid`` pins the php-fpm master; without it the master is found in
    /proc by its command line (see ``autoscaler.actuator.process``).
    ``clock`` returns monotonic seconds and times the smoothing window.
    """

    def __init__(
        self,
        settings: Settings | MemorySettings,
        *,
        proc_root: Path = PROC_ROOT,
        cgroup_root: Path = CGROUP_ROOT,
        master_pid: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(settings, Settings):
            settings = MemorySettings.from_settings(settings)
        self.settings = settings
        self.proc_root = proc_root
        self.cgroup_root = cgroup_root
        self._master_pid = master_pid
        self._master: MasterProcess | None = None
        self._master_warning: str | None = None
        self._clock = clock
        # Per pool: (at_seconds, figure) of recent figures, all measured or
        # all from the setting.
        self._recent: dict[str, deque[tuple[float, WorkerMemory]]] = {}
        self._logged_sources: dict[str, tuple[str, str]] = {}

    def budget(self, pool: str, sample: PoolSample | None) -> MemoryBudget:
        """Return the pool's memory budget; ``sample`` is its latest status page, if any."""
        limit = self.memory_limit()
        measured = self._smoothed(pool, self.worker_memory(pool, sample))
        budget = MemoryBudget(
            limit_bytes=limit.limit_bytes,
            limit_source=limit.source,
            reserve_bytes=self.settings.reserve_bytes,
            worker_bytes=measured.worker_bytes,
            worker_source=measured.source,
            margin_ratio=self.settings.margin_ratio,
        )
        self._log_sources(pool, limit, measured, budget)
        return budget

    # memory limit ------------------------------------------------------

    def memory_limit(self) -> MemoryLimit:
        """Return the memory limit from the setting, the master's cgroup or /proc/meminfo."""
        if self.settings.limit_bytes is not None:
            return MemoryLimit(self.settings.limit_bytes, LIMIT_SETTING)
        total = read_meminfo_total(self.proc_root)
        pid = self.master_pid()
        cgroup = None
        if pid is not None:
            cgroup = read_cgroup_limit(pid, self.proc_root, self.cgroup_root)
        cgroup_bytes = cgroup.limit_bytes if cgroup is not None else None
        # A cgroup limit above the machine's memory never binds.
        if cgroup is not None and cgroup_bytes is not None and (
            total is None or cgroup_bytes <= total
        ):
            return cgroup
        if total is not None:
            return MemoryLimit(total, LIMIT_MEMINFO, str(self.proc_root / "meminfo"))
        return MemoryLimit(None, LIMIT_UNKNOWN)

    def master_pid(self) -> int | None:
        """Return the php-fpm master's PID, or None (logged once) when none is found."""
        if self._master_pid is not None:
            return self._master_pid
        if self._master is not None and is_alive(self._master, self.proc_root):
            return self._master.pid
        try:
            self._master = select_master(
                config_file=self.settings.fpm_config_file,
                pid_file=self.settings.pid_file,
                proc_root=self.proc_root,
            )
        except (ReloadError, ConfigError) as exc:
            self._master = None
            message = str(exc)
            if message != self._master_warning:
                self._master_warning = message
                log.warning(
                    "memory_master_not_found",
                    extra={
                        "fields": {
                            "error": message,
                            "effect": "no cgroup limit and no worker PSS; the memory "
                            "budget uses /proc/meminfo and the status page",
                        }
                    },
                )
            return None
        self._master_warning = None
        return self._master.pid

    # per-worker memory -------------------------------------------------

    def worker_memory(self, pool: str, sample: PoolSample | None) -> WorkerMemory:
        """Return the 90th percentile worker memory of ``pool`` from the sources available.

        With both the workers' PSS and ``last request memory``, the larger
        figure counts. A worker that has not served a request yet has a PSS
        far below what it reaches while serving one: 231 KiB for each of 50
        fresh PHP 8.2 workers, against 2 MiB or more once they served a
        request. The allocator peak shows what requests take.
        """
        pids = find_pool_workers(pool, self.proc_root, self.master_pid())
        pss = [value for value in (read_pss_bytes(pid, self.proc_root) for pid in pids) if value]
        from_pss = WorkerMemory(percentile_90(pss), WORKER_PSS, len(pss)) if pss else None
        from_status = self._from_last_request_memory(sample)

        if from_pss is not None and from_status is not None:
            return max(from_pss, from_status, key=lambda figure: figure.worker_bytes)
        if from_pss is not None:
            return from_pss
        if from_status is not None:
            return from_status
        return WorkerMemory(self.settings.worker_bytes, WORKER_SETTING)

    def _from_last_request_memory(self, sample: PoolSample | None) -> WorkerMemory | None:
        if sample is None or not sample.workers:
            return None
        # 0 means the worker is running a request: no figure yet. A status
        # request served by the pool itself also reports a peak, which after
        # a large request includes the heap the worker kept (12 MiB after a
        # 22 MiB request, PHP 8.2), so it lowers the percentile only a little.
        peaks = [
            worker.last_request_memory_bytes
            for worker in sample.workers
            if worker.last_request_memory_bytes
        ]
        if not peaks:
            return None
        estimate = percentile_90(peaks) * self.settings.allocator_to_rss_ratio
        return WorkerMemory(math.ceil(estimate), WORKER_LAST_REQUEST_MEMORY, len(peaks))

    def _smoothed(self, pool: str, measured: WorkerMemory) -> WorkerMemory:
        """Return the highest figure within the window, ``measured`` included.

        PSS and ``last request memory`` figures share one window, because
        both estimate the same memory. Moving to or from the setting starts a
        new window: a measured figure replaces the configured guess at once.
        """
        now = self._clock()
        recent = self._recent.setdefault(pool, deque())
        if recent and _is_setting(recent[-1][1]) != _is_setting(measured):
            recent.clear()
        horizon = now - self.settings.worker_window_seconds
        while recent and recent[0][0] < horizon:
            recent.popleft()
        recent.append((now, measured))
        return max((figure for _, figure in recent), key=lambda figure: figure.worker_bytes)

    def _log_sources(
        self, pool: str, limit: MemoryLimit, measured: WorkerMemory, budget: MemoryBudget
    ) -> None:
        sources = (limit.source, measured.source)
        if self._logged_sources.get(pool) == sources:
            return
        self._logged_sources[pool] = sources
        fields: dict[str, object] = {
            "pool": pool,
            "limit_source": limit.source,
            "limit_bytes": limit.limit_bytes,
            "limit_path": limit.path,
            "reserve_bytes": budget.reserve_bytes,
            "worker_source": measured.source,
            "worker_bytes": budget.worker_bytes,
            "ceiling": budget.ceiling,
        }
        if limit.source in (LIMIT_MEMINFO, LIMIT_UNKNOWN):
            fields["hint"] = (
                f"no cgroup memory limit visible for php-fpm; set {env_name('memory_limit_bytes')} "
                "when php-fpm runs under a limit the agent cannot see (another container)"
            )
        log.info("memory_sources", extra={"fields": fields})


# cgroup and /proc readers ----------------------------------------------


def _is_setting(figure: WorkerMemory) -> bool:
    return figure.source == WORKER_SETTING


def parse_proc_cgroup(text: str) -> tuple[str | None, str | None]:
    """Return the cgroup v2 path and the cgroup v1 memory controller path of /proc/PID/cgroup.

    Lines read ``ID:CONTROLLERS:PATH``; the v2 line is ``0::PATH``.
    """
    v2_path = None
    v1_path = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    return v2_path, v1_path


def read_cgroup_limit(pid: int, proc_root: Path, cgroup_root: Path) -> MemoryLimit | None:
    """Return the memory limit of the cgroup of ``pid``, or None when it is not visible.

    ``limit_bytes`` is None when the cgroup is visible and sets no limit. The
    lowest limit between the process's cgroup and the root of the mount
    counts, because a parent's limit (the pod's, in Kubernetes) also applies.
    """
    try:
        text = (proc_root / str(pid) / "cgroup").read_text()
    except OSError:
        return None
    v2_path, v1_path = parse_proc_cgroup(text)
    own_v2, own_v1 = _own_cgroup_paths(proc_root)
    if v2_path is not None:
        found = _walk_limits(
            cgroup_root, v2_path, own_v2, "memory.max", _parse_v2_limit, LIMIT_CGROUP_V2
        )
        if found is not None:
            return found
    if v1_path is not None:
        return _walk_limits(
            cgroup_root / "memory",
            v1_path,
            own_v1,
            "memory.limit_in_bytes",
            _parse_v1_limit,
            LIMIT_CGROUP_V1,
        )
    return None


def _own_cgroup_paths(proc_root: Path) -> tuple[str | None, str | None]:
    try:
        return parse_proc_cgroup((proc_root / "self" / "cgroup").read_text())
    except OSError:
        return None, None


def _walk_limits(
    mount: Path,
    cgroup_path: str,
    own_path: str | None,
    file_name: str,
    parse: Callable[[str], int | None],
    source: str,
) -> MemoryLimit | None:
    directory = _cgroup_directory(mount, cgroup_path, own_path)
    if directory is None:
        return None
    lowest: int | None = None
    lowest_path: str | None = None
    seen = False
    for folder in _up_to(directory, mount):
        limit_file = folder / file_name
        try:
            raw = limit_file.read_text().strip()
        except OSError:
            continue
        seen = True
        value = parse(raw)
        if value is not None and (lowest is None or value < lowest):
            lowest, lowest_path = value, str(limit_file)
    if not seen:
        return None
    return MemoryLimit(lowest, source, lowest_path or str(directory / file_name))


def _cgroup_directory(mount: Path, cgroup_path: str, own_path: str | None) -> Path | None:
    """Map a cgroup path from /proc/PID/cgroup to a directory under ``mount``.

    Inside a container the mount usually shows the container's own cgroup
    as its root, while /proc/PID/cgroup may still name the full host path
    (cgroup v1 without a cgroup namespace). That root is the right directory
    only when the process is in the agent's own cgroup. A path with ``..``
    lies outside the agent's cgroup namespace and cannot be seen.
    """
    if ".." in cgroup_path.split("/"):
        return None
    normalized = posixpath.normpath("/" + cgroup_path.lstrip("/"))
    directory = mount / normalized.lstrip("/")
    if directory.is_dir():
        return directory
    if own_path is not None and posixpath.normpath("/" + own_path.lstrip("/")) == normalized:
        return mount if mount.is_dir() else None
    return None


def _up_to(directory: Path, mount: Path) -> Iterable[Path]:
    current = directory
    while True:
        yield current
        if current == mount or current.parent == current:
            return
        current = current.parent


def _parse_v2_limit(raw: str) -> int | None:
    if raw == "max":
        return None
    return int(raw) if raw.isdigit() else None


def _parse_v1_limit(raw: str) -> int | None:
    if not raw.isdigit():
        return None
    value = int(raw)
    return None if value >= _V1_UNLIMITED_BYTES else value


def read_meminfo_total(proc_root: Path) -> int | None:
    """Return MemTotal of /proc/meminfo in bytes, or None when unreadable."""
    try:
        text = (proc_root / "meminfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            # The kernel writes "MemTotal:  24683792 kB"; kB means KiB here.
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def find_pool_workers(pool: str, proc_root: Path, master_pid: int | None = None) -> list[int]:
    """Return the PIDs whose command line is exactly ``php-fpm: pool POOL``, sorted.

    php-fpm pads the title with NUL bytes (PHP 8.2), and the workers of the
    ``pm.status_listen`` pool are titled ``php-fpm: pool POOL_status``, so
    only the text before the first NUL is compared, in full. With
    ``master_pid``, only that master's children count, so that two masters
    with a pool of the same name are not mixed.
    """
    title = f"php-fpm: pool {pool}".encode()
    try:
        entries = list(proc_root.iterdir())
    except OSError:
        return []
    pids = []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        cmdline = read_cmdline(pid, proc_root)
        if cmdline is None or cmdline.split(b"\0", 1)[0] != title:
            continue
        if master_pid is not None and read_parent_pid(pid, proc_root) != master_pid:
            continue
        pids.append(pid)
    return sorted(pids)


def read_parent_pid(pid: int, proc_root: Path) -> int | None:
    """Return field 4 (ppid) of /proc/PID/stat, or None when the process is gone."""
    try:
        stat = (proc_root / str(pid) / "stat").read_text(errors="replace")
    except OSError:
        return None
    # The command name in parentheses may contain spaces and ')'; the state
    # and the parent PID follow the last ')'.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 2 or not fields[1].isdigit():
        return None
    return int(fields[1])


def read_pss_bytes(pid: int, proc_root: Path) -> int | None:
    """Return the ``Pss:`` total of /proc/PID/smaps_rollup in bytes (Linux 4.14+), or None.

    Reading another user's smaps_rollup needs the same user or
    CAP_SYS_PTRACE; without them the kernel refuses with EACCES, and the
    caller falls back to the status page.
    """
    try:
        text = (proc_root / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def percentile_90(values: Iterable[int]) -> int:
    """Return the 90th percentile by nearest rank: with fewer than 10 values, the largest."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile_90 needs at least one value")
    rank = math.ceil(0.9 * len(ordered))
    return ordered[rank - 1]
