"""Alembic migrations of the review database; applied by :func:`ffr.review.migrate.upgrade`."""
