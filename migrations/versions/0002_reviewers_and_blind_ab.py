"""reviewers, their sign-in sessions, and blind A/B pairs, assignments and judgments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 09:41:44.231313
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ab_pairs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column("register", sa.String(length=32), nullable=True),
        sa.Column("complexity", sa.String(length=32), nullable=True),
        sa.Column("base_model", sa.String(length=200), nullable=False),
        sa.Column("adapter", sa.String(length=200), nullable=False),
        sa.Column("base_answer", sa.Text(), nullable=False),
        sa.Column("adapter_answer", sa.Text(), nullable=False),
        sa.Column("dataset_version", sa.String(length=128), nullable=True),
        sa.Column("source_id", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ab_pairs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ab_pairs_adapter"), ["adapter"], unique=False)

    op.create_table(
        "reviewers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "ab_assignments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pair_id", sa.Integer(), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=False),
        sa.Column("adapter_first", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["pair_id"], ["ab_pairs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["reviewer_id"], ["reviewers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pair_id", "reviewer_id", name="uq_ab_assignment_pair_reviewer"),
    )
    with op.batch_alter_table("ab_assignments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ab_assignments_pair_id"), ["pair_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ab_assignments_reviewer_id"), ["reviewer_id"], unique=False)

    op.create_table(
        "ab_judgments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pair_id", sa.Integer(), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=False),
        sa.Column("winner", sa.String(length=8), nullable=False),
        sa.Column("adapter_first", sa.Boolean(), nullable=False),
        sa.Column("base_naturalness", sa.Integer(), nullable=False),
        sa.Column("base_accuracy", sa.Integer(), nullable=False),
        sa.Column("base_completeness", sa.Integer(), nullable=False),
        sa.Column("tuned_naturalness", sa.Integer(), nullable=False),
        sa.Column("tuned_accuracy", sa.Integer(), nullable=False),
        sa.Column("tuned_completeness", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["pair_id"], ["ab_pairs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["reviewer_id"], ["reviewers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pair_id", "reviewer_id", name="uq_ab_judgment_pair_reviewer"),
    )
    with op.batch_alter_table("ab_judgments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ab_judgments_pair_id"), ["pair_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ab_judgments_reviewer_id"), ["reviewer_id"], unique=False)

    op.create_table(
        "reviewer_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["reviewer_id"], ["reviewers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    with op.batch_alter_table("reviewer_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reviewer_sessions_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_reviewer_sessions_reviewer_id"), ["reviewer_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reviewer_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reviewer_sessions_reviewer_id"))
        batch_op.drop_index(batch_op.f("ix_reviewer_sessions_expires_at"))

    op.drop_table("reviewer_sessions")
    with op.batch_alter_table("ab_judgments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ab_judgments_reviewer_id"))
        batch_op.drop_index(batch_op.f("ix_ab_judgments_pair_id"))

    op.drop_table("ab_judgments")
    with op.batch_alter_table("ab_assignments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ab_assignments_reviewer_id"))
        batch_op.drop_index(batch_op.f("ix_ab_assignments_pair_id"))

    op.drop_table("ab_assignments")
    op.drop_table("reviewers")
    with op.batch_alter_table("ab_pairs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ab_pairs_adapter"))

    op.drop_table("ab_pairs")
