"""Finding the php-fpm master: a fake /proc tree for odd entries, real php-fpm for the rest."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from autoscaler.actuator.process import (
    MasterNotFoundError,
    MasterProcess,
    find_masters,
    is_alive,
    parse_master_title,
    read_master,
    select_master,
    signal_master,
)
from autoscaler.errors import ConfigError, ReloadError
from tests.conftest import requires_fpm
from tests.fpm import FpmServer

# A master's title as php-fpm 8.2 writes it: over the original arguments,
# NUL-padded to their length.
MASTER_CMDLINE = b"php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)" + b"\0" * 25


class FakeProc:
    """A /proc tree in a temporary directory with hand-written entries."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        (root / "self").mkdir()
        (root / "meminfo").write_text("MemTotal: 1 kB\n")

    def add(
        self,
        pid: int,
        cmdline: bytes,
        *,
        start_ticks: int = 1000,
        state: str = "S",
        uid: int = 0,
        comm: str = "php-fpm8.2",
    ) -> Path:
        entry = self.root / str(pid)
        entry.mkdir()
        (entry / "cmdline").write_bytes(cmdline)
        self.write_stat(pid, start_ticks=start_ticks, state=state, comm=comm)
        (entry / "status").write_text(f"Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
        return entry

    def write_stat(self, pid: int, *, start_ticks: int, state: str = "S", comm: str = "x") -> None:
        # Fields 3 to 52 of /proc/PID/stat; field 22 is the start time.
        rest = ["0"] * 50
        rest[0] = state
        rest[22 - 3] = str(start_ticks)
        (self.root / str(pid) / "stat").write_text(f"{pid} ({comm}) " + " ".join(rest) + "\n")


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


# Command line parsing ----------------------------------------------------


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (MASTER_CMDLINE, (True, "/etc/php/8.2/fpm/php-fpm.conf")),
        (b"php-fpm: master process (/etc/php-fpm.conf)", (True, "/etc/php-fpm.conf")),
        (
            b"php-fpm: master process (/a path/with (parens).conf)\0\0",
            (True, "/a path/with (parens).conf"),
        ),
        (b"php-fpm: master process (/usr/local/etc/php-f", (True, None)),
        (b"php-fpm: master process\0\0\0", (True, None)),
        (b"php-fpm: pool www" + b"\0" * 40, (False, None)),
        (b"php-fpm: pool www_status\0\0", (False, None)),
        (b"php-fpm: pool master process\0", (False, None)),
        (b"php-fpm: master processes\0", (False, None)),
        (b"php-fpm8.2\0-F\0-y\0/etc/php-fpm.conf\0", (False, None)),
        (b"sleep\0" + b"60\0", (False, None)),
        (b"", (False, None)),
    ],
    ids=[
        "master-padded",
        "master-unpadded",
        "path-with-spaces-and-parens",
        "title-cut-short",
        "title-without-path",
        "worker",
        "status-listen-worker",
        "pool-named-master-process",
        "similar-title",
        "master-re-executing",
        "other-program",
        "kernel-thread",
    ],
)
def test_parse_master_title(cmdline: bytes, expected: tuple[bool, str | None]) -> None:
    assert parse_master_title(cmdline) == expected


# Fake /proc ---------------------------------------------------------------


def test_find_masters_skips_workers(proc: FakeProc) -> None:
    proc.add(100, MASTER_CMDLINE, start_ticks=5000, uid=0)
    proc.add(101, b"php-fpm: pool www" + b"\0" * 60, uid=33)
    proc.add(102, b"php-fpm: pool www_status" + b"\0" * 53, uid=33)
    proc.add(200, b"nginx: master process /usr/sbin/nginx\0", comm="nginx")

    masters = find_masters(proc.root)

    assert masters == [
        MasterProcess(pid=100, config_path="/etc/php/8.2/fpm/php-fpm.conf", uid=0, start_ticks=5000)
    ]


def test_find_masters_tolerates_vanishing_entries(proc: FakeProc) -> None:
    proc.add(100, MASTER_CMDLINE)
    # Exited between listing /proc and reading: the directory is empty.
    (proc.root / "300").mkdir()
    # Exited between reading cmdline and stat.
    vanished = proc.add(301, b"php-fpm: master process (/srv/b.conf)\0")
    (vanished / "stat").unlink()
    # An entry that cannot be read as a file.
    unreadable = proc.add(302, b"")
    (unreadable / "cmdline").unlink()
    (unreadable / "cmdline").mkdir()
    # A master that exited and was not yet reaped.
    proc.add(303, b"php-fpm: master process (/srv/c.conf)\0", state="Z")

    assert [master.pid for master in find_masters(proc.root)] == [100]


def test_find_masters_parses_stat_after_odd_comm(proc: FakeProc) -> None:
    proc.add(100, MASTER_CMDLINE, start_ticks=777, comm="php) S 1 2 (x")

    (master,) = find_masters(proc.root)

    assert master.start_ticks == 777


def test_find_masters_on_missing_proc(tmp_path: Path) -> None:
    with pytest.raises(MasterNotFoundError, match="shareProcessNamespace"):
        find_masters(tmp_path / "no-proc")


def test_is_alive_detects_reused_pid(proc: FakeProc) -> None:
    proc.add(100, MASTER_CMDLINE, start_ticks=5000)
    master = read_master(100, proc.root)
    assert master is not None
    assert is_alive(master, proc.root)

    # The master exited and the kernel gave its PID to a process started later.
    proc.write_stat(100, start_ticks=9999, comm="sleep")

    assert not is_alive(master, proc.root)


def test_is_alive_false_for_zombie_and_gone(proc: FakeProc) -> None:
    proc.add(100, MASTER_CMDLINE, start_ticks=5000)
    master = read_master(100, proc.root)
    assert master is not None

    proc.add(101, b"", start_ticks=5000, state="Z")
    zombie = MasterProcess(pid=101, config_path=None, uid=0, start_ticks=5000)
    gone = MasterProcess(pid=102, config_path=None, uid=0, start_ticks=5000)

    assert not is_alive(zombie, proc.root)
    assert not is_alive(gone, proc.root)


def test_select_master_single(proc: FakeProc) -> None:
    proc.add(100, MASTER_CMDLINE)
    proc.add(101, b"php-fpm: pool www\0")

    assert select_master(proc_root=proc.root).pid == 100


def test_select_master_ambiguous(proc: FakeProc) -> None:
    proc.add(100, b"php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)\0")
    proc.add(200, b"php-fpm: master process (/etc/php/7.4/fpm/php-fpm.conf)\0")

    with pytest.raises(ConfigError) as caught:
        select_master(proc_root=proc.root)

    message = str(caught.value)
    assert "PID 100 (/etc/php/8.2/fpm/php-fpm.conf" in message
    assert "PID 200 (/etc/php/7.4/fpm/php-fpm.conf" in message
    assert "PHPFPM_AUTOSCALER_FPM_CONFIG_FILE" in message
    assert "PHPFPM_AUTOSCALER_PID_FILE" in message


def test_select_master_by_config_file(proc: FakeProc) -> None:
    proc.add(100, b"php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)\0")
    proc.add(200, b"php-fpm: master process (/etc/php/7.4/fpm/php-fpm.conf)\0")

    chosen = select_master(config_file="/etc/php/7.4/fpm/php-fpm.conf", proc_root=proc.root)

    assert chosen.pid == 200


def test_select_master_config_file_not_running(proc: FakeProc) -> None:
    proc.add(100, b"php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)\0")

    with pytest.raises(MasterNotFoundError) as caught:
        select_master(config_file="/srv/other.conf", proc_root=proc.root)

    assert isinstance(caught.value, ReloadError)
    assert "/srv/other.conf" in str(caught.value)
    assert "PID 100" in str(caught.value)


def test_select_master_none_running(proc: FakeProc) -> None:
    proc.add(101, b"php-fpm: pool www\0")

    with pytest.raises(MasterNotFoundError, match="no php-fpm master process found"):
        select_master(proc_root=proc.root)


def test_pid_file_wins_over_ambiguity(proc: FakeProc, tmp_path: Path) -> None:
    proc.add(100, b"php-fpm: master process (/etc/a.conf)\0")
    proc.add(200, b"php-fpm: master process (/etc/b.conf)\0")
    pid_file = tmp_path / "php-fpm.pid"
    pid_file.write_text("200\n")

    assert select_master(pid_file=pid_file, proc_root=proc.root).pid == 200


@pytest.mark.parametrize(
    ("content", "expected_in_warning"),
    [
        ("101\n", "'php-fpm: pool www'"),
        ("999\n", "PID 999, which is not running"),
        ("garbage", "'garbage', which is not a PID"),
        ("", "'', which is not a PID"),
        (None, "the file does not exist"),
    ],
    ids=["points-at-worker", "dead-pid", "not-a-number", "empty", "missing"],
)
def test_bad_pid_file_is_ignored_with_warning(
    proc: FakeProc,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    content: str | None,
    expected_in_warning: str,
) -> None:
    proc.add(100, MASTER_CMDLINE)
    proc.add(101, b"php-fpm: pool www\0\0\0")
    pid_file = tmp_path / "php-fpm.pid"
    if content is not None:
        pid_file.write_text(content)

    with caplog.at_level(logging.WARNING, logger="autoscaler.actuator.process"):
        chosen = select_master(pid_file=pid_file, proc_root=proc.root)

    assert chosen.pid == 100
    (record,) = [r for r in caplog.records if r.getMessage() == "pid_file_ignored"]
    fields = record.__dict__["fields"]
    assert fields["pid_file"] == str(pid_file)
    assert expected_in_warning in fields["pointed_at"]


def test_pid_file_master_with_other_config(proc: FakeProc, tmp_path: Path) -> None:
    proc.add(100, b"php-fpm: master process (/etc/a.conf)\0")
    proc.add(200, b"php-fpm: master process (/etc/b.conf)\0")
    pid_file = tmp_path / "php-fpm.pid"
    pid_file.write_text("100\n")

    chosen = select_master(config_file="/etc/b.conf", pid_file=pid_file, proc_root=proc.root)

    assert chosen.pid == 200


# Real php-fpm ----------------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not php-fpm."""
    process = subprocess.Popen(["sleep", "300"])
    yield process
    process.kill()
    process.wait()


def dead_pid() -> int:
    """Return the PID of a process that has exited and was reaped."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@requires_fpm
def test_find_masters_real_fpm(fpm_factory: Callable[..., FpmServer]) -> None:
    server = fpm_factory(pid_file=False)

    masters = [m for m in find_masters() if m.config_path == str(server.conf)]

    assert len(masters) == 1
    assert masters[0].pid == server.pid
    assert masters[0].uid == os.getuid()
    assert is_alive(masters[0])


@requires_fpm
def test_select_master_with_real_pid_file(fpm_factory: Callable[..., FpmServer]) -> None:
    server = fpm_factory()
    assert server.pid_path is not None

    assert select_master(pid_file=server.pid_path).pid == server.pid


@requires_fpm
def test_stale_pid_file_is_ignored(
    fpm_factory: Callable[..., FpmServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = fpm_factory(pid_file=False)
    pid_file = tmp_path / "stale.pid"
    stale = dead_pid()
    pid_file.write_text(f"{stale}\n")

    with caplog.at_level(logging.WARNING, logger="autoscaler.actuator.process"):
        chosen = select_master(config_file=server.conf, pid_file=pid_file)

    assert chosen.pid == server.pid
    (record,) = [r for r in caplog.records if r.getMessage() == "pid_file_ignored"]
    fields = record.__dict__["fields"]
    assert fields["pid_file"] == str(pid_file)
    assert fields["pointed_at"] == f"PID {stale}, which is not running (stale PID file)"


@requires_fpm
def test_pid_file_of_other_process_is_ignored(
    fpm_factory: Callable[..., FpmServer],
    tmp_path: Path,
    sleeper: subprocess.Popen[bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = fpm_factory(pid_file=False)
    pid_file = tmp_path / "reused.pid"
    pid_file.write_text(f"{sleeper.pid}\n")

    with caplog.at_level(logging.WARNING, logger="autoscaler.actuator.process"):
        chosen = select_master(config_file=server.conf, pid_file=pid_file)

    assert chosen.pid == server.pid
    (record,) = [r for r in caplog.records if r.getMessage() == "pid_file_ignored"]
    assert record.__dict__["fields"]["pointed_at"] == (
        f"PID {sleeper.pid}, which is not a php-fpm master but 'sleep 300'"
    )


@requires_fpm
def test_two_masters_told_apart(fpm_factory: Callable[..., FpmServer]) -> None:
    first = fpm_factory(pid_file=False)
    second = fpm_factory(pid_file=False)

    assert select_master(config_file=first.conf).pid == first.pid
    assert select_master(config_file=second.conf).pid == second.pid
    with pytest.raises(ConfigError, match="php-fpm masters, so the one to reload is ambiguous"):
        select_master()


@requires_fpm
def test_master_survives_reload_and_dies_on_stop(fpm_factory: Callable[..., FpmServer]) -> None:
    server = fpm_factory(pid_file=False)
    master = select_master(config_file=server.conf)

    server.reload()
    server.wait_ready()
    assert is_alive(master)

    server.stop()
    assert not is_alive(master)
    assert read_master(server.pid) is None


@requires_fpm
def test_signal_master_without_permission(fpm_factory: Callable[..., FpmServer]) -> None:
    """A forked child that dropped to uid 65534 signals the root master and gets EPERM."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    server = fpm_factory(pid_file=False)
    master = select_master(config_file=server.conf)
    read_end, write_end = os.pipe()

    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        os.close(read_end)
        report = "no error"
        try:
            os.setgid(65534)
            os.setuid(65534)
            signal_master(master, signal.SIGUSR2)
        except ReloadError as exc:
            report = str(exc)
        except BaseException as exc:  # report anything to the parent
            report = repr(exc)
        os.write(write_end, report.encode())
        os._exit(0)

    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(child, 0)

    assert "not permitted to send SIGUSR2" in message
    assert f"run the agent as uid {os.getuid()}" in message
    assert "CAP_KILL" in message
    assert server.alive()
