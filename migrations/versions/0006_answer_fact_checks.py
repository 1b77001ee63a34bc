"""every served answer's figures checked against the fact registry in the background: critical errors,
warnings and the findings stored with the interaction

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fact_critical", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("fact_warnings", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "fact_findings",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.create_index(batch_op.f("ix_interactions_fact_critical"), ["fact_critical"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_interactions_fact_critical"))
        batch_op.drop_column("fact_findings")
        batch_op.drop_column("fact_warnings")
        batch_op.drop_column("fact_critical")
