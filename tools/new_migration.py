"""Write a new Alembic revision from the difference between the models and the migrations.

Usage: python tools/new_migration.py "what changed" [--rev-id 0002]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

import sagestack.db.models  # noqa: F401
from sagestack.db.base import MIGRATIONS_DIR


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("message")
    parser.add_argument("--rev-id", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'schema.db'}")
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            command.revision(cfg, message=args.message, autogenerate=True, rev_id=args.rev_id)


if __name__ == "__main__":
    main()
