"""What the ``qrgate-province`` subcommands share: the ``--config`` option and opening the database from it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..db import Database
from ..settings import ProvinceConfig, load_province_config

DEFAULT_CONFIG = Path("/etc/qrgate/province.toml")


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help=f"the service's TOML file (default {DEFAULT_CONFIG} when it exists, else built-in "
                        "defaults)")
    parser.add_argument("--dsn", default=None, help="PostgreSQL connection string; overrides database.dsn")


def config_of(args: argparse.Namespace) -> ProvinceConfig:
    path = args.config if args.config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    config = load_province_config(path)
    if args.dsn:
        config = config.model_copy(update={"database": config.database.model_copy(update={"dsn": args.dsn})})
    return config


def open_database(config: ProvinceConfig) -> Database:
    """The database, its tables created if missing."""
    database = Database(config.database)
    try:
        database.migrate()
    except BaseException:
        database.close()
        raise
    return database
