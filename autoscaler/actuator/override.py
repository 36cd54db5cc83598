"""The override file: rendering and safe, atomic writes.

php-fpm applies the last definition of a key, and an include that sorts last
overrides the pool's own file (measured on PHP 8.2: ``pool.d/zz-override.conf``
with ``[www]`` and ``pm.max_children = 12`` made the pool use 12).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from autoscaler.errors import ApplyError
from autoscaler.fpmconfig.rules import PmSettings

HEADER = (
    "; Managed by phpfpm-autoscaler: the agent rewrites this file whenever it\n"
    "; resizes a pool, so edits here are lost. Set limits through the agent's\n"
    "; PHPFPM_AUTOSCALER_* environment variables instead.\n"
)
FILE_MODE = 0o644


def render_override(pools: Mapping[str, PmSettings]) -> str:
    """Render one ``[pool]`` section per managed pool, in a stable order."""
    lines = [HEADER]
    for name in sorted(pools):
        pm = pools[name]
        lines.append(f"[{name}]")
        lines.append(f"pm.max_children = {pm.max_children}")
        if pm.pm == "dynamic":
            for key, value in (
                ("pm.start_servers", pm.start_servers),
                ("pm.min_spare_servers", pm.min_spare_servers),
                ("pm.max_spare_servers", pm.max_spare_servers),
            ):
                if value is not None:
                    lines.append(f"{key} = {value}")
        lines.append("")
    return "\n".join(lines)


def read_override(path: Path) -> str | None:
    """Return the file's content, or None when it does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ApplyError(f"cannot read override file {path}: {exc}") from exc


def write_atomically(path: Path, content: str | None) -> None:
    """Replace ``path`` with ``content`` (None removes it) so readers see old or new, never half.

    The temporary file lives in the same directory (``os.replace`` is atomic
    only within one file system), is fsynced before the rename, and the
    directory is fsynced after it. A symlink at ``path`` is refused: the
    agent writes only the file it was given, never where a link points.
    """
    directory = path.parent
    try:
        if path.is_symlink():
            raise ApplyError(
                f"override file {path} is a symlink; point PHPFPM_AUTOSCALER_OVERRIDE_FILE at a "
                "regular file the agent owns"
            )
        if content is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            _fsync_directory(directory)
            return
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(content)
                handle.flush()
                os.fchmod(handle.fileno(), FILE_MODE)
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_directory(directory)
    except ApplyError:
        raise
    except OSError as exc:
        raise ApplyError(
            f"cannot write override file {path}: {exc.strerror or exc}; the directory "
            f"{directory} must exist and be writable by the agent (uid {os.geteuid()})"
        ) from exc


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_override_path(path: Path) -> list[str]:
    """Return problems that would stop the agent from owning ``path`` (empty when fine)."""
    problems = []
    directory = path.parent
    if not directory.is_dir():
        problems.append(f"directory {directory} of the override file does not exist")
    elif not os.access(directory, os.W_OK | os.X_OK):
        problems.append(f"directory {directory} is not writable by uid {os.geteuid()}")
    if path.is_symlink():
        problems.append(f"override file {path} is a symlink")
    elif path.exists() and not stat.S_ISREG(path.stat().st_mode):
        problems.append(f"override file {path} is not a regular file")
    return problems
