"""Shared fixtures: a real php-fpm started in a temporary directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fpm import FpmServer, PoolSpec, find_fpm_binary

SHARED_CASES = Path(__file__).parent / "fixtures" / "cases"

requires_fpm = pytest.mark.skipif(
    find_fpm_binary() is None, reason="php-fpm not installed; bash .ci/run installs php8.2-fpm"
)


@pytest.fixture
def fpm_factory(tmp_path: Path) -> Iterator[Callable[..., FpmServer]]:
    """Build and start php-fpm masters; every one is stopped after the test."""
    servers: list[FpmServer] = []

    def start(*pools: PoolSpec, start: bool = True, **kwargs: object) -> FpmServer:
        root = tmp_path / f"fpm{len(servers)}"
        root.mkdir()
        server = FpmServer(root, pools or (PoolSpec(),), **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        if start:
            server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def fpm(fpm_factory: Callable[..., FpmServer]) -> FpmServer:
    """One php-fpm with pool ``www`` on TCP and pool ``sock`` on a unix socket."""
    return fpm_factory(
        PoolSpec(
            name="www", max_children=3, start_servers=1, min_spare_servers=1, max_spare_servers=2
        ),
        PoolSpec(
            name="sock",
            listen="unix",
            max_children=2,
            start_servers=1,
            min_spare_servers=1,
            max_spare_servers=1,
        ),
    )
