"""The database layer of the whole product, on the lowest floor: every table (`database.models`), the
engines, sessions and direct PostgreSQL connections (`database.engine`) and the Alembic upgrade
(`database.migrate`; the migrations themselves are `migrations/versions/`).

Each table has one owner, the only module that writes it; the others read:

| tables | owner (writer) |
|---|---|
| interactions, ratings, dead_letters | `feedback.store`, `feedback.postgres_writes` (via `feedback.writer`) |
| corrections, review_dismissals | `feedback.review_queue` (file imports go through it too) |
| ab_pairs, ab_assignments, ab_judgments | `feedback.ab` |
| dataset_records, dataset_reviews | `feedback.dataset_review` |
| reviewers, reviewer_sessions | `feedback.reviewers` |
| adapter_versions | `feedback.registry` |
| rollout_state, rollout_events | `router.rollout` |
| leases | `feedback.leases` |
| retrain_runs | `feedback.retrain_runs` |
"""
