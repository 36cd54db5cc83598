"""Apply new pool sizes: validate, write, reload, verify, and roll back on failure.

A reload of php-fpm with an invalid configuration kills the whole master,
and ``systemctl reload`` reports success all the same (measured on PHP 8.2:
the master exits with 78 within about 30 ms). So nothing counts as applied
until the master is alive and every managed pool reports a new
``start time``; otherwise the previous file goes back and php-fpm is
reloaded once more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from autoscaler.actuator.override import read_override, render_override, write_atomically
from autoscaler.actuator.process import PROC_ROOT, boot_ticks_now, children_started_since
from autoscaler.errors import ApplyError, ReloadError, ValidationError, VerificationError
from autoscaler.fpmconfig.rules import PmSettings, validate_pm

log = logging.getLogger("autoscaler.actuator")

# pool name -> start time (Unix seconds), None when the poll failed.
StartTimeReader = Callable[[], Awaitable[Mapping[str, float | None]]]
# Runs `php-fpm -t` on the configuration as it is on disk; returns php-fpm's
# error messages, empty when the test passed.
ConfigTester = Callable[[], Awaitable[list[str]]]
# Returns why no reload may happen now (e.g. it would cut in-flight
# requests), or None.
ReloadGuard = Callable[[], str | None]


class StopRequestedError(VerificationError):
    """The agent is stopping, so it no longer waits for the reload to show."""


class Reloader(Protocol):
    """The part of a reload backend (signal, systemd, supervisor, command) that the applier uses."""

    name: str

    def master(self) -> object | None: ...

    async def reload(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """Outcome of one apply. ``result`` is a reloads-metric label, or "unchanged"."""

    result: str
    duration_seconds: float
    message: str = ""
    # True when php-fpm is not running after the attempt: the operator must act.
    fpm_down: bool = False

    @property
    def applied(self) -> bool:
        return self.result == "success"


class Applier:
    """Owns the override file and every reload the agent triggers."""

    def __init__(
        self,
        override_file: Path,
        reloader: Reloader,
        read_start_times: StartTimeReader,
        *,
        config_tester: ConfigTester | None = None,
        reload_guard: ReloadGuard | None = None,
        verify_timeout_seconds: float = 30.0,
        verify_poll_seconds: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
        proc_root: Path = PROC_ROOT,
        stop_requested: Callable[[], bool] = lambda: False,
    ) -> None:
        self.override_file = override_file
        self.reloader = reloader
        self.read_start_times = read_start_times
        self.config_tester = config_tester
        self.reload_guard = reload_guard
        self.verify_timeout_seconds = verify_timeout_seconds
        self.verify_poll_seconds = verify_poll_seconds
        self.clock = clock
        self.sleep = sleep
        self.wall_clock = wall_clock
        self.proc_root = proc_root
        # Set by the controller: a shutdown ends the wait for verification.
        self.stop_requested = stop_requested
        self._reload_ticks: int | None = None
        # Content of the last file that php-fpm accepted and verified; put
        # back when php-fpm is found dead, so its restart comes up healthy.
        self.last_good: str | None = None

    async def apply(self, pools: Mapping[str, PmSettings]) -> ApplyResult:
        """Make php-fpm run ``pools``; see the module docstring for the sequence."""
        started = self.clock()
        content = render_override(pools)
        try:
            previous = read_override(self.override_file)
        except ApplyError as exc:
            log.error("override_read_failed", extra={"fields": {"error": str(exc)}})
            return self._result("reload_failed", started, str(exc))
        if content == previous:
            return ApplyResult("unchanged", 0.0)

        problems = [f"[{name}] {message}" for name, pm in pools.items() for message in validate_pm(pm)]
        if problems:
            log.error("override_rejected", extra={"fields": {"problems": problems}})
            return self._result("validation_failed", started, "; ".join(problems))
        refusal = self.reload_guard() if self.reload_guard is not None else None
        if refusal is not None:
            log.error("reload_refused", extra={"fields": {"reason": refusal}})
            return self._result("validation_failed", started, refusal)

        try:
            write_atomically(self.override_file, content)
        except ApplyError as exc:
            log.error("override_write_failed", extra={"fields": {"error": str(exc)}})
            return self._result("reload_failed", started, str(exc))

        try:
            await self._test_config()
            before = await self._trigger_reload()
            await self._verify(before, list(pools))
        except ValidationError as exc:
            # Nothing was reloaded: only the file goes back.
            self._restore(previous)
            log.error("override_rejected", extra={"fields": {"error": str(exc)}})
            return self._result("validation_failed", started, str(exc))
        except StopRequestedError as exc:
            # php-fpm was signalled and is most likely running the new file,
            # so the file stays: restoring it would leave disk and php-fpm
            # disagreeing after the agent has gone.
            log.warning("reload_unverified", extra={"fields": {"error": str(exc)}})
            return self._result("unverified", started, str(exc))
        except (ReloadError, VerificationError) as exc:
            return await self._roll_back(previous, exc, started)

        self.last_good = content
        result = self._result("success", started, "")
        log.info(
            "reload_succeeded",
            extra={
                "fields": {
                    "backend": self.reloader.name,
                    "duration_seconds": round(result.duration_seconds, 3),
                    "pools": {name: pm.max_children for name, pm in pools.items()},
                }
            },
        )
        return result

    async def _start_times_before_reload(self) -> Mapping[str, float | None]:
        """Read the start times, and make sure a reload now will change them.

        php-fpm reports its start time in whole seconds, so a reload within
        the second in which a pool (re)started would show the same value and
        look like a failed reload: wait for the next second first.
        """
        before = await self.read_start_times()
        known = [value for value in before.values() if value is not None]
        if known:
            wait = max(known) + 1.0 - self.wall_clock()
            if wait > 0:
                await self.sleep(wait + 0.01)
        return before

    async def _test_config(self) -> None:
        if self.config_tester is None:
            return
        messages = await self.config_tester()
        if messages:
            raise ValidationError("php-fpm -t rejected the candidate: " + " | ".join(messages))

    async def _verify(self, before: Mapping[str, float | None], pools: list[str]) -> None:
        """Wait until the master is alive and every pool in ``pools`` shows that it reloaded.

        A pool has reloaded when its start time changed. A pool whose status
        page cannot be read (through a saturated pool's own socket it waits
        behind the queue) counts as reloaded once the live master has a
        worker forked after the signal: php-fpm forks new workers only after
        the old ones drained and the new configuration loaded.
        """
        deadline = self.clock() + self.verify_timeout_seconds
        pending = set(pools)
        while True:
            master = self.reloader.master()
            if master is None:
                raise VerificationError("php-fpm master is gone after the reload")
            now_times = await self.read_start_times()
            for name in list(pending):
                new = now_times.get(name)
                if new is not None and new != before.get(name):
                    pending.discard(name)
            unreadable = sorted(name for name in pending if now_times.get(name) is None)
            if unreadable and self._fresh_workers(master):
                log.info("reload_verified_by_processes", extra={"fields": {"pools": unreadable}})
                pending.difference_update(unreadable)
            if not pending:
                return
            if self.stop_requested():
                raise StopRequestedError("stop requested before the reload was verified")
            if self.clock() >= deadline:
                raise VerificationError(
                    f"pools {sorted(pending)} showed no new start time within "
                    f"{self.verify_timeout_seconds:g} s after the reload"
                )
            await self.sleep(self.verify_poll_seconds)

    def _fresh_workers(self, master: object) -> bool:
        pid = getattr(master, "pid", None)
        if not isinstance(pid, int) or self._reload_ticks is None:
            return False
        return children_started_since(pid, self._reload_ticks, self.proc_root) > 0

    async def _trigger_reload(self) -> Mapping[str, float | None]:
        """Reload php-fpm; return the start times read just before."""
        before = await self._start_times_before_reload()
        self._reload_ticks = boot_ticks_now()
        await self.reloader.reload()
        return before

    async def _roll_back(self, previous: str | None, error: ApplyError, started: float) -> ApplyResult:
        """Put the previous file back and, if php-fpm loaded the failed one, reload it again."""
        log.error(
            "reload_failed",
            extra={"fields": {"backend": self.reloader.name, "stage": error.stage, "error": str(error)}},
        )
        self._restore(previous)
        if self.reloader.master() is None:
            # php-fpm is down; its process manager restarts it from disk, and
            # the file on disk is now the previous one.
            log.critical(
                "php_fpm_down",
                extra={
                    "fields": {
                        "error": str(error),
                        "action": "previous override restored; restart php-fpm or let its "
                        "process manager do it",
                    }
                },
            )
            return self._result("reload_failed", started, str(error), fpm_down=True)
        if isinstance(error, ReloadError):
            # The reload was never triggered (no signal delivered, the command
            # failed), so php-fpm still runs the previous file.
            return self._result("reload_failed", started, str(error))
        try:
            before = await self._trigger_reload()
            await self._verify(before, [name for name, value in before.items() if value is not None])
        except (ReloadError, VerificationError) as exc:
            down = self.reloader.master() is None
            log.critical("rollback_failed", extra={"fields": {"error": str(exc), "fpm_down": down}})
            return self._result("reload_failed", started, f"{error}; rollback: {exc}", fpm_down=down)
        log.warning("rolled_back", extra={"fields": {"error": str(error)}})
        return self._result("rolled_back", started, str(error))

    def _restore(self, previous: str | None) -> None:
        """Put back the file as it was before this attempt (None: there was none)."""
        try:
            write_atomically(self.override_file, previous)
        except ApplyError as exc:
            log.critical("override_restore_failed", extra={"fields": {"error": str(exc)}})

    def _result(self, result: str, started: float, message: str, *, fpm_down: bool = False) -> ApplyResult:
        return ApplyResult(result, self.clock() - started, message, fpm_down)
