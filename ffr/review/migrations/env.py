"""Alembic environment: runs on the connection that :func:`ffr.review.migrate.upgrade` passes in.

To add a migration after changing ffr/review/db.py::

    python -c "from ffr.review.migrate import autogenerate; autogenerate('sqlite:///r.sqlite', 'what changed')"
    (review the generated file; tests/test_review_db.py checks that models and migrations agree)
"""

from alembic import context

from ffr.review.db import Base

connection = context.config.attributes["connection"]
# render_as_batch: SQLite cannot ALTER most things; batch mode copies the table instead.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
