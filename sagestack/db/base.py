"""Engine, sessions and migrations for the metadata store.

SQLite in WAL mode is the default (one file in the data dir, readers never
block the writer); any SQLAlchemy URL works through ``--db``. The schema is
owned by Alembic: :meth:`Database.migrate` brings any database to head on start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Stable constraint names make Alembic migrations portable between SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite drops tzinfo)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use datetime.now(UTC)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        # WAL: concurrent readers with one writer; NORMAL sync is still crash-safe for
        # a killed process (only a power loss can drop the last transactions).
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


class Database:
    """One engine and session factory for the whole server process."""

    def __init__(self, url: str) -> None:
        self.url = url
        is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            kwargs["pool_size"] = 16
            kwargs["max_overflow"] = 16
        self.engine = create_engine(url, **kwargs)
        if is_sqlite:
            _tune_sqlite(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite allows one writer at a time; serializing writers in-process avoids
        # busy-wait retries under concurrent requests.
        self._write_lock = threading.Lock() if is_sqlite else None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read session; nothing is committed."""
        with self._sessions() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any exception."""
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with self._sessions() as session, session.begin():
                yield session
        finally:
            if lock is not None:
                lock.release()

    def on_commit_of(self, models: tuple[type[Base], ...], callback: Callable[[], None]) -> None:
        """Call ``callback`` after every commit that inserted, changed or deleted rows of ``models``.

        Both ORM flushes and bulk ``update()``/``delete()`` statements count, so a cache of
        derived state (authorization decisions) can never outlive the rows it came from.
        """
        mark = f"changed:{id(callback)}"

        def on_flush(session: Session, _context: Any) -> None:
            if any(isinstance(row, models) for rows in (session.new, session.dirty, session.deleted)
                   for row in rows):
                session.info[mark] = True

        def on_execute(state: Any) -> None:
            mapper = state.bind_arguments.get("mapper")
            if (state.is_update or state.is_delete) and mapper is not None and issubclass(mapper.class_, models):
                state.session.info[mark] = True

        def on_commit(session: Session) -> None:
            if session.info.pop(mark, False):
                callback()

        event.listen(self._sessions, "after_flush", on_flush)
        event.listen(self._sessions, "do_orm_execute", on_execute)
        event.listen(self._sessions, "after_commit", on_commit)
        event.listen(self._sessions, "after_rollback", lambda session: session.info.pop(mark, None))

    def migrate(self) -> None:
        """Apply every Alembic migration up to head."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = None
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.engine.dispose()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"
