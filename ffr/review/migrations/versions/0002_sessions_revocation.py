"""browser sessions, rater revocation, no stored CSRF key

Cookies now hold a session id (table ``sessions``) instead of the invite or admin token; raters can be revoked
(``raters.revoked_at``); CSRF tokens are derived from the session id, so the CSRF key stored in ``meta`` is
deleted. Cookies set before this revision stop working: raters open their invite link once more.

Revision ID: 0002
Revises: 0001
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("sessions", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
                    sa.Column("rater_id", sa.Integer, sa.ForeignKey("raters.id"), nullable=True),
                    sa.Column("is_admin", sa.Boolean, nullable=False),
                    sa.Column("created_at", sa.Float, nullable=False),
                    sa.Column("expires_at", sa.Float, nullable=False))
    op.create_index("ix_sessions_rater_id", "sessions", ["rater_id"])
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])
    op.add_column("raters", sa.Column("revoked_at", sa.Float, nullable=True))
    op.execute("DELETE FROM meta WHERE key = 'secret'")


def downgrade() -> None:
    with op.batch_alter_table("raters") as batch:
        batch.drop_column("revoked_at")
    op.drop_table("sessions")
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.bulk_insert(meta, [{"key": "secret", "value": secrets.token_urlsafe(48)}])  # what revision 0001 reads
