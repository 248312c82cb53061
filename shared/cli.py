"""The ``python -m services.<name> <command>`` entry point every service shares."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import click
from sqlalchemy import Engine

from shared.config import Env
from shared.db import ensure_sqlite_directory, make_engine
from shared.logs import configure_logging
from shared.metrics import serve_process_metrics


class ServiceConfig(Protocol):
    database_url: str
    log_level: str


def service_main(
    prog: str,
    *,
    load_config: Callable[[], Any],
    init_db: Callable[[Engine], None],
    commands: Mapping[str, Callable[[Any], None] | click.Group],
    argv: list[str] | None = None,
) -> None:
    """``init-db`` creates the service's tables; every other command runs a process
    (relay or consumer) with the service's config, or is a click group given the rest of
    the arguments (e.g. ``accounts add --name …``) with the config in ``ctx.obj``."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("command", choices=["init-db", *commands])
    args, rest = parser.parse_known_args(argv)
    config: ServiceConfig = load_config()
    configure_logging(config.log_level)
    command = commands.get(args.command)
    if args.command == "init-db":
        ensure_sqlite_directory(config.database_url)
        init_db(make_engine(config.database_url))
    elif isinstance(command, click.Group):
        command.main(args=rest, prog_name=f"{prog} {args.command}", obj={"config": config})
    else:
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        assert command is not None
        # A long-running process: its metrics, unless it shares an API's (multiprocess).
        serve_process_metrics(Env().integer("FUNNEL_METRICS_PORT", 0) or None)
        command(config)
