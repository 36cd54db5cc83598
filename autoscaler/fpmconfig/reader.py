"""Read php-fpm's configuration the way php-fpm 8.2 resolves it.

What php-fpm does, from php-src ``sapi/fpm/fpm/fpm_conf.c`` (PHP 8.2) and
checked with ``php-fpm8.2 -tt``:

- It parses one line at a time, each line as its own INI document, and
  processes an ``include = GLOB`` right after the line that names it. The
  glob's matches are read in sorted order, directories are skipped, and a
  relative glob is resolved against the prefix (``-p``, else the build
  prefix). A glob that matches nothing is a warning, but a glob whose folder
  does not exist fails.
- The open section carries over into an included file: a file without a
  section header adds to the pool that was open, and the section that the
  included file ends in stays open after the include line.
- Section and key names compare case-insensitively; a later definition
  replaces an earlier one. ``[global]`` is the global section.
- Only ``;`` starts a comment. A line starting with ``#`` is an error.
- At most 5 files can be nested.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from autoscaler.errors import ConfigError
from autoscaler.fpmconfig.model import (
    FpmConfig,
    GlobalConfig,
    IncludeDirective,
    PoolConfig,
    Source,
)
from autoscaler.fpmconfig.rules import normalize_pm

# php-fpm counts the main file as the first of at most 5 nested files
# (ini_recursion in fpm_conf.c).
MAX_NESTED_FILES = 5

GLOBAL_SECTION = "global"
GLOB_MAGIC = re.compile(r"[*?\[]")
ENV_REFERENCE = re.compile(r"\$\{([^}]*)\}")
# The Zend INI scanner turns these bare words into "1" and "".
TRUE_WORDS = frozenset({"true", "on", "yes"})
FALSE_WORDS = frozenset({"false", "off", "no", "none", "null"})

# Keys php-fpm 8.2 accepts, by how it parses them: the option tables of
# fpm_conf.c and the keys that php-fpm8.2 -tt prints.
GLOBAL_INTEGER_KEYS = frozenset(
    {"process.max", "process.priority", "emergency_restart_threshold", "log_limit", "rlimit_files"}
)
GLOBAL_TIME_KEYS = frozenset(
    {"process_control_timeout", "emergency_restart_interval", "systemd_interval"}
)
GLOBAL_STRING_KEYS = frozenset({"pid", "error_log", "syslog.ident", "events.mechanism"})
GLOBAL_OTHER_KEYS = frozenset(
    {"syslog.facility", "log_buffering", "log_level", "daemonize", "rlimit_core"}
)
POOL_INTEGER_KEYS = frozenset(
    {
        "pm.max_children",
        "pm.start_servers",
        "pm.min_spare_servers",
        "pm.max_spare_servers",
        "pm.max_spawn_rate",
        "pm.max_requests",
        "listen.backlog",
        "listen.setfib",
        "process.priority",
        "request_slowlog_trace_depth",
        "rlimit_files",
    }
)
POOL_TIME_KEYS = frozenset(
    {"pm.process_idle_timeout", "request_terminate_timeout", "request_slowlog_timeout"}
)
POOL_OTHER_KEYS = frozenset(
    {
        "pm",
        "prefix",
        "user",
        "group",
        "listen",
        "listen.acl_users",
        "listen.acl_groups",
        "listen.owner",
        "listen.group",
        "listen.mode",
        "listen.allowed_clients",
        "process.dumpable",
        "pm.status_path",
        "pm.status_listen",
        "ping.path",
        "ping.response",
        "access.log",
        "access.format",
        "slowlog",
        "request_terminate_timeout_track_finished",
        "rlimit_core",
        "chroot",
        "chdir",
        "catch_workers_output",
        "decorate_workers_output",
        "clear_env",
        "security.limit_extensions",
        "apparmor_hat",
    }
)
POOL_ARRAY_KEYS = frozenset(
    {"env", "php_value", "php_admin_value", "php_flag", "php_admin_flag", "access.suppress_path"}
)

SIZE_VALUE = re.compile(r"^\s*(-?\d+)\s*([kKmMgG]?)\s*$")
SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


@dataclass(frozen=True)
class _Value:
    text: str
    source: Source
    # ${VAR} references left as written because the environment lacks them.
    unresolved: tuple[str, ...] = ()


@dataclass
class _Section:
    name: str
    entries: dict[str, list[_Value]] = field(default_factory=dict)

    def last(self, key: str) -> _Value | None:
        values = self.entries.get(key)
        return values[-1] if values else None


def load_fpm_config(
    path: str | os.PathLike[str],
    *,
    prefix: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> FpmConfig:
    """Read the main file and everything it includes into the effective configuration.

    ``root`` is the folder that php-fpm's ``/`` is at, as seen by the agent:
    ``/proc/PID/root`` for a master in another container of the same pod.
    Absolute include patterns are looked up under it; ``path`` must already
    include it.

    ``prefix`` is php-fpm's ``-p`` value. Without it, a relative include is
    resolved against the folder above the main file's folder, which is the
    build prefix of the official Docker image and of source builds
    (``PREFIX/etc/php-fpm.conf``); a warning says so. ``environ`` is
    php-fpm's environment, for ``${VAR}`` values; without it every reference
    is left as written and reported as a warning, because the agent's own
    environment is not php-fpm's.

    Raises ConfigError, naming the file and line, when php-fpm would fail to
    load the files: a missing main file, an unreadable include, a line that
    does not parse, or a value php-fpm rejects while reading.
    """
    reader = _Reader(
        Path(path),
        prefix=None if prefix is None else Path(prefix),
        environ=environ,
        root=None if root is None else Path(root),
    )
    return reader.read()


class _Reader:
    def __init__(
        self,
        main_path: Path,
        *,
        prefix: Path | None,
        environ: Mapping[str, str] | None,
        root: Path | None = None,
    ) -> None:
        self.main_path = main_path
        self.prefix = prefix
        self.root = root
        self.environ = environ
        self.global_section = _Section(GLOBAL_SECTION)
        self.pools: dict[str, _Section] = {}  # lower-case name to section
        self.current: _Section | None = None  # None: the global section
        self.files: list[str] = []
        self.includes: list[IncludeDirective] = []
        self.warnings: list[str] = []
        self._prefix_guess_reported = False

    def read(self) -> FpmConfig:
        if not self.main_path.is_file():
            raise ConfigError(
                f"php-fpm configuration file {self.main_path} is missing or not a file; "
                "point the agent at php-fpm's main file (the one given to php-fpm -y)"
            )
        self._read_file(self.main_path, depth=0)
        global_config = self._build_global()
        pools = {section.name: self._build_pool(section) for section in self.pools.values()}
        return FpmConfig(
            path=str(self.main_path),
            global_config=global_config,
            pools=pools,
            files=tuple(self.files),
            includes=tuple(self.includes),
            warnings=tuple(self.warnings),
        )

    # reading -----------------------------------------------------------

    def _read_file(self, path: Path, *, depth: int) -> None:
        if depth >= MAX_NESTED_FILES:
            raise ConfigError(
                f"{path}: php-fpm fails to include more than {MAX_NESTED_FILES} files "
                "recursively; flatten the include chain"
            )
        try:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise ConfigError(
                f"failed to open configuration file {path}: {exc.strerror}; "
                "check that it exists and that the agent may read it"
            ) from exc
        self.files.append(str(path))

        for number, raw_line in enumerate(text.split("\n"), start=1):
            source = Source(str(path), number)
            include = self._read_line(raw_line.rstrip("\r"), source)
            if include is not None:
                self._include(include, source, depth=depth)

    def _read_line(self, line: str, source: Source) -> str | None:
        """Apply one line; return the glob when the line is an include."""
        stripped = line.strip()
        if not stripped or stripped.startswith(";"):
            return None
        if stripped.startswith("#"):
            raise ConfigError(
                f"{source}: php-fpm 8.2 does not treat '#' as a comment and rejects "
                f"this line ({stripped!r}); start comments with ';'"
            )
        if stripped.startswith("["):
            self._enter_section(stripped, source)
            return None

        key, separator, raw_value = stripped.partition("=")
        key = key.strip()
        if not separator or not key:
            raise ConfigError(
                f"{source}: expected 'key = value' or '[section]', found {stripped!r}"
            )
        value = self._parse_value(raw_value, source)
        # php-fpm compares "include" case-sensitively and every other key
        # case-insensitively.
        if key == "include":
            if value.unresolved:
                self._warn_unresolved("include", value)
            return value.text
        self._store(key, value)
        return None

    def _enter_section(self, stripped: str, source: Source) -> None:
        end = stripped.find("]")
        rest = stripped[end + 1 :].strip() if end >= 0 else ""
        if end < 0 or (rest and not rest.startswith(";")):
            raise ConfigError(f"{source}: invalid section header {stripped!r}; write [name]")
        name = stripped[1:end].strip()
        if not name:
            raise ConfigError(f"{source}: empty section name; write [global] or [pool name]")
        if name.lower() == GLOBAL_SECTION:
            self.current = None
            return
        section = self.pools.get(name.lower())
        if section is None:
            section = _Section(name)
            self.pools[name.lower()] = section
        self.current = section

    def _store(self, key: str, value: _Value) -> None:
        name, _, subkey = key.partition("[")
        name = name.strip().lower()
        canonical = name
        if subkey:
            canonical = f"{name}[{subkey.rstrip(']').strip()}]"

        section = self.current
        if section is None:
            self._check_global(name, value)
            self.global_section.entries.setdefault(canonical, []).append(value)
            return

        # php-fpm replaces "$pool" with the pool's name in string values.
        if "$pool" in value.text:
            value = _Value(value.text.replace("$pool", section.name), value.source,
                           value.unresolved)
        self._check_pool(name, bool(subkey), value)
        section.entries.setdefault(canonical, []).append(value)

    def _check_global(self, name: str, value: _Value) -> None:
        known = GLOBAL_INTEGER_KEYS | GLOBAL_TIME_KEYS | GLOBAL_STRING_KEYS | GLOBAL_OTHER_KEYS
        if name not in known:
            self._warn_unknown(name, value.source)
            return
        if name in GLOBAL_STRING_KEYS and "$pool" in value.text:
            raise ConfigError(
                f"{value.source}: {name} uses '$pool' in the global section, which php-fpm "
                "rejects (Can't use '$pool' when the pool is not defined); "
                "move it into a pool section or write the name"
            )
        if value.unresolved:
            self._warn_unresolved(name, value)
        elif name in GLOBAL_INTEGER_KEYS:
            _parse_integer(name, value)
        elif name in GLOBAL_TIME_KEYS:
            _parse_time_seconds(name, value)

    def _check_pool(self, name: str, is_array: bool, value: _Value) -> None:
        if is_array:
            if name not in POOL_ARRAY_KEYS:
                self._warn_unknown(name, value.source)
            elif value.unresolved:
                self._warn_unresolved(name, value)
            return
        if name not in POOL_INTEGER_KEYS | POOL_TIME_KEYS | POOL_OTHER_KEYS:
            self._warn_unknown(name, value.source)
            return
        if value.unresolved:
            self._warn_unresolved(name, value)
        elif name in POOL_INTEGER_KEYS:
            _parse_integer(name, value)
        elif name in POOL_TIME_KEYS:
            _parse_time_seconds(name, value)
        elif name == "pm" and normalize_pm(value.text) is None:
            raise ConfigError(
                f"{value.source}: pm = {value.text!r} is invalid: php-fpm reports "
                "\"unable to parse value for entry 'pm': invalid process manager "
                "(static, dynamic or ondemand)\"; set one of those three"
            )

    def _parse_value(self, raw: str, source: Source) -> _Value:
        """Parse the text after '=' as the Zend INI scanner does for fpm's keys."""
        parts: list[tuple[str, bool]] = []  # (text, quoted)
        unresolved: list[str] = []
        position = 0
        raw_text: list[str] = []

        def flush_raw() -> None:
            if raw_text:
                parts.append((self._expand("".join(raw_text), unresolved), False))
                raw_text.clear()

        while position < len(raw):
            char = raw[position]
            if char == ";":
                break
            if char == '"':
                flush_raw()
                text, position = _read_double_quoted(raw, position, source)
                parts.append((self._expand(text, unresolved), True))
                continue
            if char == "'":
                flush_raw()
                end = raw.find("'", position + 1)
                if end < 0:
                    raise ConfigError(f"{source}: unterminated ' quote; close the quote")
                parts.append((raw[position + 1 : end], True))
                position = end + 1
                continue
            raw_text.append(char)
            position += 1
        flush_raw()

        if parts and not parts[0][1]:
            parts[0] = (parts[0][0].lstrip(), False)
        if parts and not parts[-1][1]:
            parts[-1] = (parts[-1][0].rstrip(), False)
        text = "".join(part for part, _ in parts)
        if len(parts) == 1 and not parts[0][1]:
            word = text.lower()
            if word in TRUE_WORDS:
                text = "1"
            elif word in FALSE_WORDS:
                text = ""
        return _Value(text, source, tuple(unresolved))

    def _expand(self, text: str, unresolved: list[str]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if self.environ is not None and name in self.environ:
                return self.environ[name]
            unresolved.append(name)
            return match.group(0)

        return ENV_REFERENCE.sub(replace, text)

    # includes ----------------------------------------------------------

    def _include(self, pattern: str, source: Source, *, depth: int) -> None:
        resolved = pattern if os.path.isabs(pattern) else str(self._prefix_for(pattern) / pattern)
        if self.root is not None:
            resolved = str(self.root / resolved.lstrip("/"))
        self._check_glob_folder(pattern, resolved, source)
        matches = sorted(glob.glob(resolved))
        files = [match for match in matches if not os.path.isdir(match)]
        if not matches:
            self.warnings.append(
                f"Nothing matches the include pattern '{resolved}' from {source.path} "
                f"at line {source.line}"
            )
        slot = len(self.includes)
        first = len(self.files)
        self.includes.append(IncludeDirective(resolved, source, tuple(files), first, first))
        for match in files:
            self._read_file(Path(match), depth=depth + 1)
        self.includes[slot] = IncludeDirective(
            resolved, source, tuple(files), first, len(self.files)
        )

    def _prefix_for(self, pattern: str) -> Path:
        if self.prefix is not None:
            return self.prefix
        guess = self.main_path.absolute().parent.parent
        if not self._prefix_guess_reported:
            self._prefix_guess_reported = True
            self.warnings.append(
                f"relative include '{pattern}' resolved against {guess}, the folder above the "
                "main file's folder (php-fpm's build prefix in the official Docker image and in "
                "source builds); set the prefix when php-fpm runs with -p"
            )
        return guess

    @staticmethod
    def _check_glob_folder(pattern: str, resolved: str, source: Source) -> None:
        # glibc's glob with GLOB_ERR, as php-fpm calls it, fails when the
        # folder before the first wildcard cannot be opened; a missing file
        # without wildcards is only "nothing matches".
        magic = GLOB_MAGIC.search(resolved)
        if magic is None:
            return
        folder = os.path.dirname(resolved[: magic.start()] + "x")
        if not os.path.isdir(folder) or not os.access(folder, os.R_OK | os.X_OK):
            raise ConfigError(
                f"{source}: php-fpm fails with \"Unable to globalize '{resolved}'\" because the "
                f"folder {folder} does not exist or cannot be read (include = {pattern}); "
                "create the folder or fix the include"
            )

    # warnings ----------------------------------------------------------

    def _warn_unknown(self, name: str, source: Source) -> None:
        self.warnings.append(
            f"{source}: unknown entry '{name}'; php-fpm 8.2 rejects it and fails to start, "
            "so check its spelling"
        )

    def _warn_unresolved(self, name: str, value: _Value) -> None:
        names = ", ".join(f"${{{variable}}}" for variable in value.unresolved)
        self.warnings.append(
            f"{value.source}: {name} uses {names}, which the environment given to the reader "
            "does not define; the value is unknown here and php-fpm uses its own environment"
        )

    # building the result -----------------------------------------------

    def _build_global(self) -> GlobalConfig:
        section = self.global_section
        timeout = _last_time(section, "process_control_timeout")
        process_max = _last_integer(section, "process.max")
        return GlobalConfig(
            process_control_timeout_seconds=0.0 if timeout is None else timeout,
            process_max=0 if process_max is None else process_max,
            pid_file=self._resolve_path(_last_text(section, "pid")),
            error_log=self._resolve_error_log(_last_text(section, "error_log")),
            sources=_sources(section),
        )

    def _build_pool(self, section: _Section) -> PoolConfig:
        pm_value = section.last("pm")
        pm = "" if pm_value is None else (normalize_pm(pm_value.text) or pm_value.text)
        return PoolConfig(
            name=section.name,
            pm=pm,
            max_children=_last_integer(section, "pm.max_children"),
            start_servers=_last_integer(section, "pm.start_servers"),
            min_spare_servers=_last_integer(section, "pm.min_spare_servers"),
            max_spare_servers=_last_integer(section, "pm.max_spare_servers"),
            max_spawn_rate=_last_integer(section, "pm.max_spawn_rate"),
            process_idle_timeout_seconds=_last_time(section, "pm.process_idle_timeout"),
            listen=self._resolve_listen(section),
            status_path=_last_text(section, "pm.status_path"),
            status_listen=_last_text(section, "pm.status_listen"),
            request_terminate_timeout_seconds=_last_time(section, "request_terminate_timeout"),
            memory_limit_bytes=self._memory_limit(section),
            sources=_sources(section),
            definitions={
                key: tuple(value.source for value in values)
                for key, values in section.entries.items()
            },
        )

    def _resolve_listen(self, section: _Section) -> str | None:
        listen = _last_text(section, "listen")
        if listen is None or not _is_unix_socket(listen) or os.path.isabs(listen):
            return listen
        # php-fpm resolves a relative socket path against the pool's prefix,
        # then the -p prefix.
        pool_prefix = _last_text(section, "prefix")
        if pool_prefix and os.path.isabs(pool_prefix):
            return str(Path(pool_prefix) / listen)
        if pool_prefix and self.prefix is not None:
            return str(self.prefix / pool_prefix / listen)
        if self.prefix is not None:
            return str(self.prefix / listen)
        return listen

    def _resolve_path(self, value: str | None) -> str | None:
        # NOTE: without -p, php-fpm resolves a relative pid or error_log path
        # against its build-time state folder, which the reader cannot know.
        if value is None or os.path.isabs(value) or self.prefix is None:
            return value
        return str(self.prefix / value)

    def _resolve_error_log(self, value: str | None) -> str | None:
        if value is not None and value.lower() == "syslog":
            return value
        return self._resolve_path(value)

    def _memory_limit(self, section: _Section) -> int | None:
        # php_admin_value is applied after php_value, so it wins.
        for key in ("php_admin_value[memory_limit]", "php_value[memory_limit]"):
            value = section.last(key)
            if value is None or value.unresolved:
                continue
            parsed = _parse_size_bytes(value.text)
            if parsed is None:
                self.warnings.append(
                    f"{value.source}: {key} = {value.text!r} is not a size PHP understands "
                    "(digits with an optional K, M or G); the memory limit is unknown"
                )
            return parsed
        return None


# values ----------------------------------------------------------------


def _read_double_quoted(raw: str, start: int, source: Source) -> tuple[str, int]:
    """Return the text of the double-quoted string at ``start`` and the position after it."""
    text: list[str] = []
    position = start + 1
    while position < len(raw):
        char = raw[position]
        if char == "\\" and position + 1 < len(raw) and raw[position + 1] in "\"\\":
            text.append(raw[position + 1])
            position += 2
            continue
        if char == '"':
            return "".join(text), position + 1
        text.append(char)
        position += 1
    raise ConfigError(f'{source}: unterminated " quote; close the quote on the same line')


def _atoi(text: str) -> int:
    """Convert like C's atoi: optional sign and leading digits, 0 when there are none."""
    match = re.match(r"\s*([+-]?\d+)", text)
    return int(match.group(1)) if match else 0


def _parse_integer(key: str, value: _Value) -> int:
    # fpm_conf_set_integer: digits with one optional leading '-'; an empty
    # value reads as 0.
    text = value.text
    digits = text[1:] if text.startswith("-") else text
    if digits and not (digits.isascii() and digits.isdigit()):
        raise ConfigError(
            f"{value.source}: {key} = {text!r} is invalid: php-fpm reports \"unable to parse "
            f"value for entry '{key}': is not a valid number (greater or equal than zero)\"; "
            "write a whole number"
        )
    return _atoi(text)


def _parse_time_seconds(key: str, value: _Value) -> int:
    # fpm_conf_set_time: a number with an optional s, m, h or d suffix;
    # no suffix means seconds.
    text = value.text
    if not text:
        raise ConfigError(
            f"{value.source}: {key} is empty, which php-fpm rejects (invalid time value); "
            "write a number of seconds such as 10s"
        )
    factors = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    suffix = text[-1]
    if suffix in factors:
        return factors[suffix] * _atoi(text[:-1])
    if not suffix.isdigit():
        raise ConfigError(
            f"{value.source}: {key} = {text!r} is invalid: php-fpm reports \"unknown suffix "
            "used in time value\"; use s, m, h or d, for example 10s"
        )
    return _atoi(text)


def _parse_size_bytes(text: str) -> int | None:
    """Convert a PHP size such as ``128M`` to bytes; -1 stays -1 (no limit)."""
    match = SIZE_VALUE.match(text)
    if match is None:
        return None
    number = int(match.group(1))
    if number < 0:
        return -1
    return number * SIZE_FACTORS[match.group(2).lower()]


def _is_unix_socket(listen: str) -> bool:
    # fpm_sockets_domain_from_address: an address with ':' or a bare port is
    # TCP; anything else is a unix socket path.
    return ":" not in listen and not listen.isdigit()


def _last_text(section: _Section, key: str) -> str | None:
    # A string with an unresolved ${VAR} keeps the reference as written.
    value = section.last(key)
    return None if value is None else value.text


def _last_integer(section: _Section, key: str) -> int | None:
    value = section.last(key)
    if value is None or value.unresolved:
        return None
    return _parse_integer(key, value)


def _last_time(section: _Section, key: str) -> float | None:
    value = section.last(key)
    if value is None or value.unresolved:
        return None
    return float(_parse_time_seconds(key, value))


def _sources(section: _Section) -> dict[str, Source]:
    return {key: values[-1].source for key, values in section.entries.items()}


# php-fpm -tt -------------------------------------------------------------

ZLOG_LINE = re.compile(r"^\[[^\]]*\] (?P<level>[A-Z]+): (?P<message>.*)$")
DUMP_SECTION = re.compile(r"^\[(?P<name>[^\]]+)\]$")
DUMP_ENTRY = re.compile(r"^\t(?P<key>[^=]+?) = (?P<value>.*)$")
UNDEFINED = "undefined"


def load_with_fpm_binary(
    binary: str,
    path: str | os.PathLike[str],
    *,
    prefix: str | os.PathLike[str] | None = None,
    timeout_seconds: float = 30.0,
) -> FpmConfig:
    """Read the effective configuration from ``php-fpm -tt``, which prints it on stderr.

    php-fpm reports values after its own post-processing (PHP 8.2): an unset
    start_servers shows the computed default, ondemand pools show 0 spare
    servers, and a pool with pm.status_listen but no pm.status_path shows
    the path ``/``. The dump names no files, so ``sources`` stays empty.

    Raises ConfigError when the binary cannot run or php-fpm rejects the
    configuration; the message carries php-fpm's own errors.
    """
    args = [binary, "-tt", "-y", str(path)]
    if prefix is not None:
        args += ["-p", str(prefix)]
    if os.geteuid() == 0:
        # As root, php-fpm rejects a pool without "user" unless -R is given.
        args.insert(1, "-R")
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout_seconds, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(
            f"failed to run {binary} -tt on {path}: {exc}; check the php-fpm binary path"
        ) from exc

    lines = [match for match in map(ZLOG_LINE.match, done.stderr.splitlines()) if match]
    if done.returncode != 0:
        errors = [m["message"] for m in lines if m["level"] in ("ERROR", "ALERT")]
        raise ConfigError(
            f"php-fpm -tt rejected {path} (exit {done.returncode}): "
            + ("; ".join(errors) or done.stderr.strip() or "no message")
        )
    sections = _parse_dump([m["message"] for m in lines if m["level"] == "NOTICE"])
    warnings = tuple(m["message"] for m in lines if m["level"] == "WARNING")
    global_entries = sections.pop(GLOBAL_SECTION, {})
    return FpmConfig(
        path=str(path),
        global_config=_dump_global(global_entries),
        pools={name: _dump_pool(name, entries) for name, entries in sections.items()},
        files=(str(path),),
        warnings=warnings,
    )


def _parse_dump(messages: list[str]) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for message in messages:
        header = DUMP_SECTION.match(message)
        if header is not None:
            current = sections.setdefault(header["name"], {})
            continue
        entry = DUMP_ENTRY.match(message)
        if entry is not None and current is not None:
            current[entry["key"]] = entry["value"]
    return sections


def _dump_value(entries: Mapping[str, str], key: str) -> str | None:
    value = entries.get(key)
    return None if value is None or value == UNDEFINED else value


def _dump_integer(entries: Mapping[str, str], key: str) -> int | None:
    value = _dump_value(entries, key)
    return None if value is None else _atoi(value)


def _dump_seconds(entries: Mapping[str, str], key: str) -> float | None:
    value = _dump_value(entries, key)
    return None if value is None else float(_atoi(value.rstrip("s")))


def _dump_global(entries: Mapping[str, str]) -> GlobalConfig:
    timeout = _dump_seconds(entries, "process_control_timeout")
    return GlobalConfig(
        process_control_timeout_seconds=0.0 if timeout is None else timeout,
        process_max=_dump_integer(entries, "process.max") or 0,
        pid_file=_dump_value(entries, "pid"),
        error_log=_dump_value(entries, "error_log"),
    )


def _dump_pool(name: str, entries: Mapping[str, str]) -> PoolConfig:
    memory_limit = None
    for key in ("php_admin_value[memory_limit]", "php_value[memory_limit]"):
        value = _dump_value(entries, key)
        if value is not None:
            memory_limit = _parse_size_bytes(value)
            break
    return PoolConfig(
        name=name,
        pm=_dump_value(entries, "pm") or "",
        max_children=_dump_integer(entries, "pm.max_children"),
        start_servers=_dump_integer(entries, "pm.start_servers"),
        min_spare_servers=_dump_integer(entries, "pm.min_spare_servers"),
        max_spare_servers=_dump_integer(entries, "pm.max_spare_servers"),
        max_spawn_rate=_dump_integer(entries, "pm.max_spawn_rate"),
        process_idle_timeout_seconds=_dump_seconds(entries, "pm.process_idle_timeout"),
        listen=_dump_value(entries, "listen"),
        status_path=_dump_value(entries, "pm.status_path"),
        status_listen=_dump_value(entries, "pm.status_listen"),
        request_terminate_timeout_seconds=_dump_seconds(entries, "request_terminate_timeout"),
        memory_limit_bytes=memory_limit,
    )
