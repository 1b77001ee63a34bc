"""interactions.needs_review dropped: an answer is in review while its latest rating is under 3 stars,
which the review queue reads from the ratings (one source of truth)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_interactions_needs_review"))
        batch_op.drop_column("needs_review")


def downgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("needs_review", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index(batch_op.f("ix_interactions_needs_review"), ["needs_review"], unique=False)
    op.execute(
        "UPDATE interactions SET needs_review = EXISTS "
        "(SELECT 1 FROM ratings WHERE ratings.interaction_id = interactions.id AND ratings.stars < 3)"
    )
