"""adapter lifecycle, three-target rollout, review queue, dataset validation, leases, retrain runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 12:29:59.772816
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dataset_records",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("dataset_version", sa.String(length=128), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column("register", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("dataset_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dataset_records_dataset_version"), ["dataset_version"], unique=False
        )

    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "retrain_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("adapter_name", sa.String(length=200), nullable=False),
        sa.Column("parent_version", sa.String(length=64), nullable=True),
        sa.Column("adapter_version", sa.String(length=64), nullable=True),
        sa.Column("dataset_version", sa.String(length=128), nullable=True),
        sa.Column("from_scratch", sa.Boolean(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("details", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("retrain_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_retrain_runs_started_at"), ["started_at"], unique=False)

    op.create_table(
        "dataset_reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("record_id", sa.String(length=200), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("question", sa.Text(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["record_id"], ["dataset_records.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["reviewer_id"], ["reviewers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("record_id", "reviewer_id", name="uq_dataset_review_record_reviewer"),
    )
    with op.batch_alter_table("dataset_reviews", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataset_reviews_record_id"), ["record_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dataset_reviews_reviewer_id"), ["reviewer_id"], unique=False)

    op.create_table(
        "review_dismissals",
        sa.Column("interaction_id", sa.String(length=64), nullable=False),
        sa.Column("reviewer", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["interaction_id"], ["interactions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("interaction_id"),
    )
    with op.batch_alter_table("adapter_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_version", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("gate_report", JSON, nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("report_path", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("created_by", sa.String(length=200), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("last_correction_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())
        )

    with op.batch_alter_table("rollout_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("from_live", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("to_live", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("details", JSON, nullable=False, server_default="{}"))

    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("target", sa.String(length=16), nullable=True))
        batch_op.create_index(batch_op.f("ix_interactions_target"), ["target"], unique=False)

    with op.batch_alter_table("rollout_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("live_adapter", sa.String(length=200), nullable=True))

    # The per-replica `loaded` / `registered` marks become lifecycle statuses: every known version
    # starts as a candidate; the adapter the rollout sends users to is the canary.
    adapters = sa.table(
        "adapter_versions",
        sa.column("status", sa.String),
        sa.column("name", sa.String),
        sa.column("version", sa.String),
    )
    op.execute(
        adapters.update().where(adapters.c.status.in_(["loaded", "registered"])).values(status="candidate")
    )
    state = sa.table("rollout_state", sa.column("adapter", sa.String), sa.column("percentage", sa.Float))
    canary = sa.select(state.c.adapter).where(state.c.percentage > 0).scalar_subquery()
    op.execute(
        adapters.update()
        .where((adapters.c.name + "@" + adapters.c.version) == canary)
        .values(status="canary")
    )


def downgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_interactions_target"))
        batch_op.drop_column("target")

    with op.batch_alter_table("rollout_state", schema=None) as batch_op:
        batch_op.drop_column("live_adapter")

    with op.batch_alter_table("rollout_events", schema=None) as batch_op:
        batch_op.drop_column("details")
        batch_op.drop_column("to_live")
        batch_op.drop_column("from_live")

    with op.batch_alter_table("adapter_versions", schema=None) as batch_op:
        batch_op.drop_column("updated_at")
        batch_op.drop_column("last_correction_id")
        batch_op.drop_column("created_by")
        batch_op.drop_column("report_path")
        batch_op.drop_column("gate_report")
        batch_op.drop_column("parent_version")

    op.drop_table("review_dismissals")
    with op.batch_alter_table("dataset_reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_reviews_reviewer_id"))
        batch_op.drop_index(batch_op.f("ix_dataset_reviews_record_id"))

    op.drop_table("dataset_reviews")
    with op.batch_alter_table("retrain_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_retrain_runs_started_at"))

    op.drop_table("retrain_runs")
    op.drop_table("leases")
    with op.batch_alter_table("dataset_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_records_dataset_version"))

    op.drop_table("dataset_records")
