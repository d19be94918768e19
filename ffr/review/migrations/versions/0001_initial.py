"""initial review schema: meta, raters, images, assignments, votes

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("meta", sa.Column("key", sa.String(64), primary_key=True),
                    sa.Column("value", sa.String(4096), nullable=False))
    op.create_table("raters", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(200), nullable=False, unique=True),
                    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
                    sa.Column("created_at", sa.Float, nullable=False))
    op.create_table("images", sa.Column("id", sa.String(128), primary_key=True),
                    sa.Column("group", sa.Integer, nullable=False), sa.Column("y", sa.Integer, nullable=False),
                    sa.Column("b", sa.Integer, nullable=False), sa.Column("order_key", sa.Integer, nullable=False),
                    sa.Column("n_votes", sa.Integer, nullable=False), sa.Column("added_at", sa.Float, nullable=False))
    op.create_index("ix_images_group", "images", ["group"])
    op.create_index("ix_images_n_votes", "images", ["n_votes"])
    op.create_table("assignments", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("rater_id", sa.Integer, sa.ForeignKey("raters.id"), nullable=False),
                    sa.Column("image_id", sa.String(128), sa.ForeignKey("images.id"), nullable=False),
                    sa.Column("task", sa.Integer, nullable=False), sa.Column("position", sa.Integer, nullable=False),
                    sa.Column("assigned_at", sa.Float, nullable=False), sa.Column("voted", sa.Boolean, nullable=False),
                    sa.UniqueConstraint("rater_id", "image_id", name="uq_assignment_rater_image"))
    op.create_index("ix_assignments_rater_id", "assignments", ["rater_id"])
    op.create_index("ix_assignments_image_id", "assignments", ["image_id"])
    op.create_index("ix_assignments_assigned_at", "assignments", ["assigned_at"])
    op.create_table("votes", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("image_id", sa.String(128), sa.ForeignKey("images.id"), nullable=False),
                    sa.Column("rater_id", sa.Integer, sa.ForeignKey("raters.id"), nullable=False),
                    sa.Column("object_present", sa.Boolean, nullable=False),
                    sa.Column("unsafe", sa.Boolean, nullable=False), sa.Column("created_at", sa.Float, nullable=False),
                    sa.UniqueConstraint("image_id", "rater_id", name="uq_vote_image_rater"))
    op.create_index("ix_votes_image_id", "votes", ["image_id"])
    op.create_index("ix_votes_rater_id", "votes", ["rater_id"])


def downgrade() -> None:
    for table in ("votes", "assignments", "images", "raters", "meta"):
        op.drop_table(table)
