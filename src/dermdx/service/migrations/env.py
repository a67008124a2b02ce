"""Alembic environment for the dermdx case database.

The service runs ``upgrade head`` itself at start (``dermdx.service.storage.upgrade_database``),
passing its own connection. To write a new revision after changing the ORM in ``storage.py``:

    alembic -c src/dermdx/service/migrations/alembic.ini -x url=sqlite:////tmp/dermdx-dev.db upgrade head
    alembic -c src/dermdx/service/migrations/alembic.ini -x url=sqlite:////tmp/dermdx-dev.db revision --autogenerate -m "what changed"
"""

from __future__ import annotations

from alembic import context

from dermdx.service.storage import Base, make_engine

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # noqa: ANN001 (a SQLAlchemy Connection)
    # Batch mode lets later revisions alter SQLite tables (SQLite has no ALTER COLUMN).
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise ValueError("no database URL: pass -x url=sqlite:///path/to/dermdx.db (or postgresql+psycopg://...)")
    engine = make_engine(url)
    with engine.connect() as new_connection:
        _run(new_connection)
        new_connection.commit()
    engine.dispose()
