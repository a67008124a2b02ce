"""The case database (SQLAlchemy 2.0) and the image store.

Tables: ``images`` (one row per distinct image, the file on disk named by its SHA-256),
``cases`` (metadata, the report, the latest final diagnosis), ``feedback`` (every answer a
clinician gives on a case), ``audit_log`` (append-only: who, when, which model and hash, input
hash, output) and ``api_tokens`` (SHA-256 of each token, never the token, plus its role).

The schema is created and upgraded by Alembic (``dermdx/service/migrations``), for SQLite and
PostgreSQL alike. SQLite runs in WAL mode with a busy timeout, and every write transaction starts
with ``BEGIN IMMEDIATE``: concurrent requests wait for the write lock instead of failing, and a
read never has to be upgraded to a write halfway (which SQLite answers with "database is locked").

Every operation here runs in its own short transaction on the caller's session, so a request that
spends a second on the model holds no lock meanwhile.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Engine, ForeignKey, Integer, String, Text, create_engine, event, func, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker
from sqlalchemy.pool import StaticPool

ROLES = ("clinician", "admin")
TOKEN_PREFIX = "ddx_"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_WRITE = "dermdx_write"  # execution option that makes SQLite begin with BEGIN IMMEDIATE
SQLITE_BUSY_TIMEOUT_MS = 30_000


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything stored here is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class ImageRecord(Base):
    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_by: Mapped[str] = mapped_column(String(100))
    image_sha256: Mapped[str] = mapped_column(String(64), ForeignKey("images.sha256"), index=True)
    age: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sex: Mapped[str] = mapped_column(String(16))
    site: Mapped[str] = mapped_column(String(32))
    model_name: Mapped[str] = mapped_column(String(200))
    model_sha256: Mapped[str] = mapped_column(String(64))
    predicted: Mapped[str] = mapped_column(String(100), index=True)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The latest final diagnosis recorded by feedback, kept here so the history can filter on it.
    final_diagnosis: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)

    image: Mapped[ImageRecord] = relationship(lazy="joined")
    feedback: Mapped[list[Feedback]] = relationship(order_by="Feedback.id", lazy="selectin")


class Feedback(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(String(32), ForeignKey("cases.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(100))
    final_diagnosis: Mapped[str | None] = mapped_column(String(200), nullable=True)
    agrees: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    case_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    model_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    input_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


@dataclass
class Caller:
    """Who made a request: the token's name and role."""

    name: str
    role: str


class NotFoundError(LookupError):
    """No row with that id."""


class ConflictError(ValueError):
    """The row would duplicate a unique value."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and ``BEGIN IMMEDIATE`` for writes."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    memory = url in ("sqlite://", "sqlite:///:memory:")
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        # One shared connection for an in-memory database, or each connection would see its own.
        **({"poolclass": StaticPool} if memory else {}),
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # noqa: ANN001 (DB-API connection)
        # We emit BEGIN ourselves (below); pysqlite's own would be a deferred BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # noqa: ANN001
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def upgrade_database(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (``alembic upgrade head``)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.connect().execution_options(**{_WRITE: True}) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()


class Storage:
    """The database engine, its sessions and the image folder.

    Args:
        url: SQLAlchemy URL (``sqlite:///path.db`` or ``postgresql+psycopg://...``).
        image_dir: folder for image files, named by SHA-256 (created if missing).
        migrate: run ``alembic upgrade head`` now (default).

    Example:
        >>> storage = Storage("sqlite:///cases.db", Path("images"))
        >>> with storage.session() as session:
        ...     storage.get_case(session, case_id)
    """

    def __init__(self, url: str, image_dir: str | Path, *, migrate: bool = True) -> None:
        if url.startswith("sqlite:///") and url not in ("sqlite:///:memory:",):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, autobegin=False)
        self.image_dir = Path(image_dir)
        self.image_dir.mkdir(parents=True, exist_ok=True)
        if migrate:
            upgrade_database(self.engine)

    def session(self) -> Session:
        """A new session (use one per request, close it after). Operations begin their own transactions."""
        return self._sessions()

    def dispose(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ transactions

    @staticmethod
    @contextmanager
    def _write(session: Session) -> Iterator[Session]:
        with session.begin():
            session.connection(execution_options={_WRITE: True})
            yield session

    # ------------------------------------------------------------------ images

    def image_path(self, sha256: str, media_type: str) -> Path:
        ext = {"image/jpeg": ".jpg", "image/png": ".png"}.get(media_type, ".bin")
        return self.image_dir / sha256[:2] / f"{sha256}{ext}"

    def save_image(self, session: Session, data: bytes, *, media_type: str, width: int, height: int) -> tuple[str, Path]:
        """Store ``data`` once by content hash (file first, then its row); returns (sha256, path)."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.image_path(sha256, media_type)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            # A unique temporary name, then an atomic rename: two uploads of one image never clash.
            tmp = path.with_name(f".{sha256}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        row = {"sha256": sha256, "media_type": media_type, "width": width, "height": height, "size_bytes": len(data), "created_at": utcnow()}
        with self._write(session):
            session.execute(_insert_ignoring_duplicates(session, ImageRecord, row))
        return sha256, path

    def image_file(self, record: ImageRecord) -> Path:
        return self.image_path(record.sha256, record.media_type)

    # ------------------------------------------------------------------ cases

    def create_case(
        self,
        session: Session,
        *,
        caller: Caller,
        image_sha256: str,
        age: int | None,
        sex: str,
        site: str,
        report: dict[str, Any],
        input_sha256: str,
    ) -> Case:
        """Insert a case and its audit entry in one transaction."""
        model = report["model"]
        case = Case(
            id=uuid.uuid4().hex,
            created_at=utcnow(),
            created_by=caller.name,
            image_sha256=image_sha256,
            age=age,
            sex=sex,
            site=site,
            model_name=model["name"],
            model_sha256=model["sha256"],
            predicted=report["predicted"],
            report=report,
            final_diagnosis=None,
        )
        with self._write(session):
            session.add(case)
            session.flush()
            self._audit(session, caller, "case.create", case_id=case.id, model_name=model["name"], model_sha256=model["sha256"], input_sha256=input_sha256, output=report)
        return self.get_case(session, case.id)

    def get_case(self, session: Session, case_id: str) -> Case:
        with session.begin():
            # populate_existing: a case written earlier in this session is read afresh, feedback included.
            case = session.get(Case, case_id, populate_existing=True)
            if case is None:
                raise NotFoundError(f"no case with id {case_id!r}; list cases with GET /api/cases")
            return case

    def list_cases(
        self,
        session: Session,
        *,
        offset: int = 0,
        limit: int = 20,
        diagnosis: str | None = None,
        predicted: str | None = None,
        since: datetime | None = None,
    ) -> tuple[int, list[Case]]:
        """Newest first. ``diagnosis`` (any case) matches the recorded final diagnosis, ``predicted`` the model's top class."""
        query = select(Case)
        # Case-insensitive: free-text diagnoses are stored as typed.
        if diagnosis:
            query = query.where(func.lower(Case.final_diagnosis) == diagnosis.strip().lower())
        if predicted:
            query = query.where(func.lower(Case.predicted) == predicted.strip().lower())
        if since is not None:
            query = query.where(Case.created_at >= as_utc(since))
        with session.begin():
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(Case.created_at.desc(), Case.id).offset(offset).limit(limit)).all()
            return int(total), list(rows)

    def add_feedback(
        self,
        session: Session,
        case_id: str,
        *,
        caller: Caller,
        final_diagnosis: str | None,
        agrees: bool | None,
        comment: str | None,
    ) -> Feedback:
        """Record a clinician's answer on a case (and audit it); a final diagnosis becomes the case's."""
        with self._write(session):
            case = session.get(Case, case_id)
            if case is None:
                raise NotFoundError(f"no case with id {case_id!r}; list cases with GET /api/cases")
            feedback = Feedback(case_id=case_id, created_at=utcnow(), created_by=caller.name, final_diagnosis=final_diagnosis, agrees=agrees, comment=comment)
            session.add(feedback)
            if final_diagnosis:
                case.final_diagnosis = final_diagnosis
            session.flush()
            output = {"feedback_id": feedback.id, "final_diagnosis": final_diagnosis, "agrees": agrees, "comment": comment}
            self._audit(session, caller, "feedback.create", case_id=case_id, model_name=case.model_name, model_sha256=case.model_sha256, output=output)
        return feedback

    # ------------------------------------------------------------------ audit

    @staticmethod
    def _audit(session: Session, caller: Caller, action: str, **fields: Any) -> None:
        session.add(AuditEntry(at=utcnow(), actor=caller.name, role=caller.role, action=action, **fields))

    def list_audit(self, session: Session, *, offset: int = 0, limit: int = 50, case_id: str | None = None) -> tuple[int, list[AuditEntry]]:
        query = select(AuditEntry)
        if case_id:
            query = query.where(AuditEntry.case_id == case_id)
        with session.begin():
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(AuditEntry.id.desc()).offset(offset).limit(limit)).all()
            return int(total), list(rows)

    # ------------------------------------------------------------------ tokens

    def create_token(self, session: Session, name: str, role: str, *, caller: Caller | None = None) -> str:
        """A new API token for ``name``; only its SHA-256 is stored, so this is the one time it is seen.

        Raises:
            ValueError: an unknown role or an empty name.
            ConflictError: a token named ``name`` exists.
        """
        name = name.strip()
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {list(ROLES)}")
        if not name or len(name) > 100:
            raise ValueError("a token name must be 1-100 characters (e.g. the clinician's user name)")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._write(session):
            if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
                raise ConflictError(f"a token named {name!r} exists; choose another name")
            session.add(ApiToken(name=name, role=role, token_sha256=hash_token(token), created_at=utcnow(), active=True))
            self._audit(session, caller or Caller(name="dermdx-cli", role="admin"), "token.create", output={"name": name, "role": role})
        return token

    def verify_token(self, session: Session, token: str) -> Caller | None:
        """The caller a token belongs to, or None for an unknown or revoked token."""
        with session.begin():
            row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == hash_token(token), ApiToken.active.is_(True)))
            return None if row is None else Caller(name=row.name, role=row.role)

    def list_tokens(self, session: Session) -> list[ApiToken]:
        with session.begin():
            return list(session.scalars(select(ApiToken).order_by(ApiToken.id)).all())

    def count(self, session: Session, table: type[Base]) -> int:
        with session.begin():
            return int(session.scalar(select(func.count()).select_from(table)) or 0)

    def ping(self, session: Session) -> None:
        with session.begin():
            session.execute(select(1))


def _insert_ignoring_duplicates(session: Session, table: type[Base], row: dict[str, Any]):  # noqa: ANN202
    """INSERT ... ON CONFLICT DO NOTHING on SQLite and PostgreSQL (two uploads of one image race)."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        return insert(table).values(**row)  # other databases: a duplicate raises
    return dialect_insert(table).values(**row).on_conflict_do_nothing()
