"""Find the php-fpm master process through /proc.

php-fpm renames its processes on Linux: the master's command line becomes
``php-fpm: master process (/path/to/php-fpm.conf)`` and each worker's
``php-fpm: pool NAME``, both padded with NUL bytes to the length of the
original arguments (measured on PHP 8.2.36). The title starts with
``php-fpm: `` whatever the binary is called (``php-fpm8.2``, ``php-fpm``).

A PID file is only a hint. php-fpm leaves it behind when it dies (for
example after a reload with an invalid configuration), and the PID in it can
be reused by any other process, so every PID is checked against /proc first.
A master is identified by its PID and its start time in clock ticks since
boot (field 22 of /proc/PID/stat), which changes when the kernel reuses the
PID. A graceful reload re-executes the master in place, so neither changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from autoscaler.errors import ConfigError, ReloadError

log = logging.getLogger("autoscaler.actuator.process")

PROC_ROOT = Path("/proc")
MASTER_TITLE = "php-fpm: master process"
CONFIG_FILE_VARIABLE = "PHPFPM_AUTOSCALER_FPM_CONFIG_FILE"
PID_FILE_VARIABLE = "PHPFPM_AUTOSCALER_PID_FILE"

# Index of `starttime` (field 22 of /proc/PID/stat) among the fields that
# follow the command name, which ends at the last ')'; the state is field 3.
_STAT_STATE_INDEX = 0
_STAT_START_TICKS_INDEX = 22 - 3
# Zombie and dead processes still have a /proc entry but cannot reload.
_DEAD_STATES = frozenset({"Z", "X", "x"})

# PID file warnings already logged, so a stale file that is checked on every
# reload warns once at WARNING and at DEBUG afterwards.
_warned_pid_files: set[tuple[str, str]] = set()


class MasterNotFoundError(ReloadError):
    """No running php-fpm master matches the settings, so nothing can be reloaded."""


@dataclass(frozen=True, slots=True)
class MasterProcess:
    """A running php-fpm master, as seen in /proc."""

    pid: int
    config_path: str | None  # from the command line; None when php-fpm cut the title short
    uid: int  # real user id: signalling it needs this user or CAP_KILL
    start_ticks: int  # start time in clock ticks since boot, /proc/PID/stat field 22

    def describe(self) -> str:
        config = self.config_path or "unknown configuration"
        return f"PID {self.pid} ({config}, uid {self.uid})"


def parse_master_title(cmdline: bytes) -> tuple[bool, str | None]:
    """Return whether a /proc/PID/cmdline is a php-fpm master's, and its config path.

    The config path is None when the title has no closing parenthesis: php-fpm
    writes the title over the memory of its original arguments, so a long
    path can be cut short.
    """
    title = cmdline.split(b"\0", 1)[0].decode("utf-8", errors="surrogateescape")
    if title == MASTER_TITLE:
        return True, None
    prefix = MASTER_TITLE + " ("
    if not title.startswith(prefix):
        return False, None
    inner = title[len(prefix) :]
    if inner.endswith(")"):
        return True, inner[:-1]
    return True, None


def _read_stat(proc_root: Path, pid: int) -> tuple[str, int] | None:
    """Return the state letter and start ticks of a PID, or None when it is gone."""
    try:
        stat = (proc_root / str(pid) / "stat").read_text(errors="replace")
    except OSError:
        return None
    # The command name in parentheses may itself contain spaces and ')'.
    fields = stat.rpartition(")")[2].split()
    try:
        return fields[_STAT_STATE_INDEX], int(fields[_STAT_START_TICKS_INDEX])
    except (IndexError, ValueError):
        return None


def boot_ticks_now() -> int:
    """Return the time since boot in clock ticks, the unit of /proc/PID/stat field 22."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def children_started_since(master_pid: int, since_ticks: int, proc_root: Path = PROC_ROOT) -> int:
    """Count the live children of ``master_pid`` started at or after ``since_ticks``.

    After a graceful reload the master re-executes itself and forks new
    workers once the old ones have drained, so a fresh child proves the
    reload went through even when the status page cannot be read.
    """
    count = 0
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(errors="replace")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        try:
            state, parent, started = fields[0], int(fields[1]), int(fields[_STAT_START_TICKS_INDEX])
        except (IndexError, ValueError):
            continue
        if parent == master_pid and started >= since_ticks and state not in _DEAD_STATES:
            count += 1
    return count


def _read_uid(proc_root: Path, pid: int) -> int | None:
    try:
        status = (proc_root / str(pid) / "status").read_text(errors="replace")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("Uid:"):
            values = line.split()
            if len(values) >= 2 and values[1].isdigit():
                return int(values[1])
    return None


def read_cmdline(pid: int, proc_root: Path = PROC_ROOT) -> bytes | None:
    """Return the raw /proc/PID/cmdline, or None when the process is gone or unreadable."""
    try:
        return (proc_root / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None


def read_master(pid: int, proc_root: Path = PROC_ROOT) -> MasterProcess | None:
    """Return the php-fpm master running as ``pid``, or None when that PID is anything else.

    Every read tolerates the process exiting between two files.
    """
    cmdline = read_cmdline(pid, proc_root)
    if cmdline is None:
        return None
    is_master, config_path = parse_master_title(cmdline)
    if not is_master:
        return None
    stat = _read_stat(proc_root, pid)
    uid = _read_uid(proc_root, pid)
    if stat is None or uid is None or stat[0] in _DEAD_STATES:
        return None
    return MasterProcess(pid=pid, config_path=config_path, uid=uid, start_ticks=stat[1])


async def wait_for_master(
    pid: int, proc_root: Path = PROC_ROOT, *, timeout_seconds: float = 2.0
) -> MasterProcess | None:
    """Return the php-fpm master running as ``pid``, waiting while it re-executes itself.

    On SIGUSR2 the master calls exec() with its original arguments, and until
    the new image sets its title, /proc shows those arguments instead of
    ``php-fpm: master process``: for 58 to 110 ms in 20 reloads of an idle
    test pool (PHP 8.2.36). Returns None at once when the process is gone, and
    after ``timeout_seconds`` when it never shows the title.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        master = read_master(pid, proc_root)
        if master is not None:
            return master
        stat = _read_stat(proc_root, pid)
        if stat is None or stat[0] in _DEAD_STATES or time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.005)


def find_masters(proc_root: Path = PROC_ROOT) -> list[MasterProcess]:
    """Scan /proc for php-fpm masters, sorted by PID.

    Processes that exit during the scan and entries that cannot be read are
    skipped. NOTE: a master in the middle of a reload is missed, because it
    shows no title while it re-executes itself (see wait_for_master).
    """
    try:
        entries = list(proc_root.iterdir())
    except OSError as exc:
        raise MasterNotFoundError(
            f"cannot list {proc_root} to find the php-fpm master: {exc}; mount /proc, and in "
            "Kubernetes share the process namespace with php-fpm (shareProcessNamespace: true)"
        ) from exc
    masters = []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        master = read_master(int(entry.name), proc_root)
        if master is not None:
            masters.append(master)
    return sorted(masters, key=lambda master: master.pid)


def is_alive(master: MasterProcess, proc_root: Path = PROC_ROOT) -> bool:
    """Tell whether this master still runs: same PID, same start time, not a zombie.

    The command line is not checked again, because while php-fpm re-executes
    itself during a reload it briefly shows its original arguments.
    """
    stat = _read_stat(proc_root, master.pid)
    if stat is None:
        return False
    state, start_ticks = stat
    return state not in _DEAD_STATES and start_ticks == master.start_ticks


def same_config(config_path: str | None, config_file: str | os.PathLike[str]) -> bool:
    """Tell whether a master's config path names ``config_file``.

    The paths are compared as written first, because in a sidecar the agent
    may not see php-fpm's files, then after resolving symbolic links.
    """
    if config_path is None:
        return False
    expected = os.fspath(config_file)
    if os.path.normpath(config_path) == os.path.normpath(expected):
        return True
    return os.path.realpath(config_path) == os.path.realpath(expected)


def select_master(
    *,
    config_file: str | os.PathLike[str] | None = None,
    pid_file: str | os.PathLike[str] | None = None,
    proc_root: Path = PROC_ROOT,
) -> MasterProcess:
    """Choose the php-fpm master to reload.

    The first match wins: the master a PID file points at (when it also runs
    ``config_file``, if that is set), then the only master running
    ``config_file``, then the only master. Raises MasterNotFoundError when no
    master matches and ConfigError when several do.
    """
    masters = find_masters(proc_root)
    if pid_file is not None:
        hinted = _master_from_pid_file(Path(pid_file), masters, proc_root)
        if hinted is not None:
            if config_file is None or same_config(hinted.config_path, config_file):
                return hinted
            _warn_pid_file(
                Path(pid_file),
                f"php-fpm master {hinted.describe()}, which does not run {os.fspath(config_file)}",
            )

    candidates = masters
    if config_file is not None:
        candidates = [m for m in masters if same_config(m.config_path, config_file)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise MasterNotFoundError(_not_found_message(masters, config_file))
    listed = "; ".join(master.describe() for master in candidates)
    raise ConfigError(
        f"found {len(candidates)} php-fpm masters, so the one to reload is ambiguous: "
        f"{listed}; set {CONFIG_FILE_VARIABLE} to the configuration file of the right one, "
        f"or {PID_FILE_VARIABLE} to its PID file"
    )


def _not_found_message(
    masters: list[MasterProcess], config_file: str | os.PathLike[str] | None
) -> str:
    if config_file is None:
        return (
            "no php-fpm master process found in /proc; start php-fpm, or in Kubernetes share "
            "the process namespace with it (shareProcessNamespace: true)"
        )
    others = "; ".join(master.describe() for master in masters) or "none"
    return (
        f"no php-fpm master runs {os.fspath(config_file)} (masters found: {others}); start "
        f"php-fpm or set {CONFIG_FILE_VARIABLE} to the path shown on its "
        "'php-fpm: master process (...)' command line"
    )


def _master_from_pid_file(
    pid_file: Path, masters: list[MasterProcess], proc_root: Path
) -> MasterProcess | None:
    """Return the master the PID file names, or None (with a warning) when the hint is wrong."""
    try:
        text = pid_file.read_text(errors="replace").strip()
    except FileNotFoundError:
        _warn_pid_file(pid_file, "nothing: the file does not exist")
        return None
    except OSError as exc:
        _warn_pid_file(pid_file, f"nothing readable ({exc.strerror})")
        return None
    if not text.isdigit() or int(text) <= 0:
        _warn_pid_file(pid_file, f"{text[:40]!r}, which is not a PID")
        return None

    pid = int(text)
    for master in masters:
        if master.pid == pid:
            return master
    cmdline = read_cmdline(pid, proc_root)
    if cmdline is None:
        _warn_pid_file(pid_file, f"PID {pid}, which is not running (stale PID file)")
        return None
    command_line = cmdline.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", errors="replace")
    _warn_pid_file(
        pid_file, f"PID {pid}, which is not a php-fpm master but {command_line[:80]!r}"
    )
    return None


def _warn_pid_file(pid_file: Path, pointed_at: str) -> None:
    key = (str(pid_file), pointed_at)
    level = logging.DEBUG if key in _warned_pid_files else logging.WARNING
    _warned_pid_files.add(key)
    log.log(
        level,
        "pid_file_ignored",
        extra={
            "fields": {
                "pid_file": str(pid_file),
                "pointed_at": pointed_at,
                "fix": "the agent looks for the master in /proc instead; correct "
                f"{PID_FILE_VARIABLE} or unset it",
            }
        },
    )


def signal_master(master: MasterProcess, signum: int, proc_root: Path = PROC_ROOT) -> None:
    """Send ``signum`` to this master, and to no other process that reused its PID.

    The signal goes through a pidfd (Linux 5.3+): the PID is pinned when the
    pidfd is opened and the start time is checked after that, so the PID
    cannot be reused between the check and the signal. Older kernels fall
    back to kill(2) right after the check.
    """
    try:
        pidfd = os.pidfd_open(master.pid)
    except ProcessLookupError as exc:
        raise _vanished(master) from exc
    except OSError:
        # NOTE: ENOSYS on kernels before 5.3: a PID reused within the few
        # microseconds between the check and kill(2) would get the signal.
        _send_by_pid(master, signum, proc_root)
        return
    try:
        if not is_alive(master, proc_root):
            raise _vanished(master)
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError as exc:
        raise _vanished(master) from exc
    except PermissionError as exc:
        raise _permission_error(master, signum) from exc
    finally:
        os.close(pidfd)


def _send_by_pid(master: MasterProcess, signum: int, proc_root: Path) -> None:
    if not is_alive(master, proc_root):
        raise _vanished(master)
    try:
        os.kill(master.pid, signum)
    except ProcessLookupError as exc:
        raise _vanished(master) from exc
    except PermissionError as exc:
        raise _permission_error(master, signum) from exc


def _vanished(master: MasterProcess) -> MasterNotFoundError:
    return MasterNotFoundError(
        f"php-fpm master {master.describe()} exited before it could be signalled; check "
        "php-fpm's error log and its process manager"
    )


def _permission_error(master: MasterProcess, signum: int) -> ReloadError:
    name = signal.Signals(signum).name
    return ReloadError(
        f"not permitted to send {name} to php-fpm master {master.describe()}; run the agent "
        f"as uid {master.uid} (the master's user) or grant it CAP_KILL"
    )
