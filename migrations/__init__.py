"""The database's Alembic history, driven from code: `lookout db upgrade` and the tests call
`upgrade(url)`.

It lives at the top level, not in `shared/`, because its environment imports every service's
models (`env_models`) and `shared/` imports no service."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "heads") -> None:
    """Apply every branch (each service keeps its migrations on its own branch)."""
    command.upgrade(alembic_config(url), revision)
