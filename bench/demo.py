"""Demo: the agent scaling a real local php-fpm pool under a burst of load.

``make demo`` runs this. It starts php-fpm in a temporary directory (pool
``www``, pm.max_children = 2, status on pm.status_listen), starts the agent
in auto mode, sends 16 concurrent 2-second requests for a while, prints the
agent's decisions and the max_children metric as they change, waits for the
scale-down after the load, and removes everything it started.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.agent import AgentProcess, agent_env, drive_load
from tests.fpm import FpmServer, PoolSpec

SHOWN_EVENTS = {
    "agent_starting",
    "controller_started",
    "scaled",
    "reload_succeeded",
    "reload_failed",
    "rolled_back",
    "poll_failed",
    "controller_stopped",
}


def show(entry: dict[str, Any]) -> None:
    event = entry.get("event")
    if event == "decision" and entry.get("direction") != "hold":
        print(
            f"  agent: decision {entry['current']} -> {entry['target']} ({entry['reason']})",
            flush=True,
        )
    elif event in SHOWN_EVENTS:
        fields = {
            k: v
            for k, v in entry.items()
            if k not in ("time", "level", "logger", "event", "settings")
        }
        print(f"  agent: {event} {fields}", flush=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="phpfpm-autoscaler-demo-") as directory:
        pool = PoolSpec(
            max_children=2,
            start_servers=1,
            min_spare_servers=1,
            max_spare_servers=1,
            status_listen=True,
        )
        fpm = FpmServer(Path(directory), [pool], process_control_timeout="10s")
        fpm.start()
        print(f"php-fpm started (pid {fpm.pid}) in {directory}: pool www, pm.max_children = 2")
        agent = AgentProcess(agent_env(fpm, scale_down_stabilization_seconds=15), echo=show)
        try:
            agent.start()
            time.sleep(3)
            print("load: 16 clients, 2-second requests, 4 each")
            results: list[tuple[int, bytes]] = []
            loader = threading.Thread(
                target=lambda: results.extend(
                    asyncio.run(
                        drive_load(
                            fpm, concurrency=16, seconds_per_request=2, requests_per_client=4
                        )
                    )
                )
            )
            loader.start()
            while loader.is_alive():
                print(
                    f"  /metrics: phpfpm_autoscaler_max_children = "
                    f"{agent.metric_value('phpfpm_autoscaler_max_children', pool='www')}, busy = "
                    f"{agent.metric_value('phpfpm_autoscaler_busy_workers', pool='www')}",
                    flush=True,
                )
                loader.join(timeout=2)
            complete = sum(
                1 for status, body in results if status == 200 and body.endswith(b"END\n")
            )
            print(f"load done: {complete}/{len(results)} requests complete with their full body")
            print("waiting for the scale-down after the stabilization window (15 s here)...")
            agent.wait_for(
                lambda: agent.metric_value("phpfpm_autoscaler_max_children", pool="www") == 2.0, 60
            )
            print(
                f"  /metrics: phpfpm_autoscaler_max_children = "
                f"{agent.metric_value('phpfpm_autoscaler_max_children', pool='www')}"
            )
            print("override file written by the agent:\n" + fpm.override.read_text())
        finally:
            code = agent.stop()
            fpm.stop()
        print(f"agent stopped with exit status {code}; php-fpm stopped; {directory} removed")


if __name__ == "__main__":
    main()
