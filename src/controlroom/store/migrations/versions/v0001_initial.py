"""The initial schema: every table ``metadata.create_all`` made before migrations.

Revision ID: 0001
Revises:
Create Date: 2026-11-30

Adopts a database made by ``create_all``: a table that already exists is left as it is
(rows included) and only the missing ones are created. Constraints keep the names
``create_all`` gave them (unnamed ones get the database's default names), so adopted and
new databases are alike.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

TABLES = (
    "workflow_state",
    "edge_replay_guard",
    "audit_log",
    "audit_head",
    "installations",
    "oauth_states",
    "cr_slack_gate",
    "digest_messages",
    "digest_open_items",
    "digest_runs",
    "deploys_deployments",
    "deploys_deliveries",
    "deploys_locks",
    "escalation_sequences",
    "escalations",
)


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())

    def missing(table: str) -> bool:
        return table not in existing

    # controlroom.store.state
    if missing("workflow_state"):
        op.create_table(
            "workflow_state",
            sa.Column("workflow", sa.String(100), nullable=False),
            sa.Column("key", sa.String(500), nullable=False),
            sa.Column("value", sa.Text(), nullable=False),
            sa.Column("updated_at", sa.Float(), nullable=False),
            sa.Column("expires_at", sa.Float(), nullable=True),
            sa.PrimaryKeyConstraint("workflow", "key"),
        )

    # controlroom.edge.replay
    if missing("edge_replay_guard"):
        op.create_table(
            "edge_replay_guard",
            sa.Column("key", sa.String(200), nullable=False),
            sa.Column("expires_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("key"),
        )
        op.create_index("ix_edge_replay_guard_expires_at", "edge_replay_guard", ["expires_at"])

    # controlroom.security.audit
    if missing("audit_log"):
        op.create_table(
            "audit_log",
            sa.Column(
                "seq",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                autoincrement=False,
                nullable=False,
            ),
            sa.Column("time", sa.Double(), nullable=False),
            sa.Column("actor", sa.String(255), nullable=False),
            sa.Column("action", sa.String(255), nullable=False),
            sa.Column("target", sa.String(1024), nullable=False),
            sa.Column("outcome", sa.String(64), nullable=False),
            sa.Column("envelope_id", sa.String(255), nullable=True),
            sa.Column("details", sa.Text(), nullable=False),
            sa.Column("prev_hash", sa.String(64), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
            sa.PrimaryKeyConstraint("seq"),
            sa.UniqueConstraint("hash"),
        )
        op.create_index("ix_audit_log_actor_seq", "audit_log", ["actor", "seq"])
        op.create_index("ix_audit_log_action_seq", "audit_log", ["action", "seq"])
        op.create_index("ix_audit_log_time", "audit_log", ["time"])
    if missing("audit_head"):
        op.create_table(
            "audit_head",
            sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("seq", sa.BigInteger(), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )

    # controlroom.security.installations
    if missing("installations"):
        op.create_table(
            "installations",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("enterprise_id", sa.String(32), nullable=False),
            sa.Column("team_id", sa.String(32), nullable=False),
            sa.Column("is_enterprise_install", sa.Boolean(), nullable=False),
            sa.Column("app_id", sa.String(32), nullable=False),
            sa.Column("bot_id", sa.String(32), nullable=False),
            sa.Column("bot_user_id", sa.String(32), nullable=False),
            sa.Column("installer_user_id", sa.String(32), nullable=False),
            sa.Column("bot_scopes", sa.Text(), nullable=False),
            sa.Column("user_scopes", sa.Text(), nullable=False),
            sa.Column("bot_token", sa.Text(), nullable=True),
            sa.Column("bot_refresh_token", sa.Text(), nullable=True),
            sa.Column("bot_token_expires_at", sa.Double(), nullable=True),
            sa.Column("user_token", sa.Text(), nullable=True),
            sa.Column("user_refresh_token", sa.Text(), nullable=True),
            sa.Column("user_token_expires_at", sa.Double(), nullable=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("status_reason", sa.Text(), nullable=False),
            sa.Column("installed_at", sa.Double(), nullable=False),
            sa.Column("updated_at", sa.Double(), nullable=False),
            sa.Column("lease_owner", sa.String(128), nullable=True),
            sa.Column("lease_until", sa.Double(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("enterprise_id", "team_id", name="uq_installations_org_team"),
        )

    # controlroom.security.oauth
    if missing("oauth_states"):
        op.create_table(
            "oauth_states",
            sa.Column("state_hash", sa.String(64), nullable=False),
            sa.Column("browser_hash", sa.String(64), nullable=False),
            sa.Column("created_at", sa.Double(), nullable=False),
            sa.Column("expires_at", sa.Double(), nullable=False),
            sa.Column("consumed_at", sa.Double(), nullable=True),
            sa.PrimaryKeyConstraint("state_hash"),
        )

    # controlroom.slack.gate_pg (its backend also creates it when missing)
    if missing("cr_slack_gate"):
        op.create_table(
            "cr_slack_gate",
            sa.Column("key", sa.String(400), nullable=False),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("period", sa.Float(precision=53), nullable=False),
            sa.Column("size", sa.Float(precision=53), nullable=False),
            sa.Column("tat", sa.Float(precision=53), nullable=False),
            sa.Column("log", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("key"),
        )

    # controlroom.workflows.digests.store
    if missing("digest_messages"):
        op.create_table(
            "digest_messages",
            sa.Column("channel", sa.String(32), nullable=False),
            sa.Column("ts", sa.String(32), nullable=False),
            sa.Column("ts_num", sa.Float(), nullable=False),
            sa.Column("thread_ts", sa.String(32), nullable=True),
            sa.Column("user", sa.String(32), nullable=True),
            sa.Column("bot_id", sa.String(32), nullable=True),
            sa.Column("subtype", sa.String(40), nullable=True),
            sa.Column("text", sa.Text(), nullable=False),
            sa.Column("edited", sa.String(32), nullable=True),
            sa.Column("reactions", sa.Text(), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("version", sa.Float(), nullable=False),
            sa.Column("stored_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("channel", "ts"),
        )
        op.create_index(
            "ix_digest_messages_channel_ts_num", "digest_messages", ["channel", "ts_num"]
        )
    if missing("digest_open_items"):
        op.create_table(
            "digest_open_items",
            sa.Column("digest", sa.String(100), nullable=False),
            sa.Column("key", sa.String(300), nullable=False),
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("channel", sa.String(32), nullable=False),
            sa.Column("item", sa.Text(), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("period", sa.String(100), nullable=False),
            sa.Column("updated_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("digest", "key"),
        )
    if missing("digest_runs"):
        op.create_table(
            "digest_runs",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("digest", sa.String(100), nullable=False),
            sa.Column("period", sa.String(100), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("window_start", sa.Float(), nullable=True),
            sa.Column("window_end", sa.Float(), nullable=False),
            sa.Column("rendered", sa.Text(), nullable=True),
            sa.Column("posted_ts", sa.Text(), nullable=False),
            sa.Column("complete", sa.Boolean(), nullable=True),
            sa.Column("summariser", sa.String(200), nullable=True),
            sa.Column("started_at", sa.Float(), nullable=False),
            sa.Column("finished_at", sa.Float(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("digest", "period", name="uq_digest_runs_digest_period"),
        )

    # controlroom.workflows.deploys.ledger
    if missing("deploys_deployments"):
        op.create_table(
            "deploys_deployments",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("run_key", sa.String(400), nullable=False),
            sa.Column("provider", sa.String(16), nullable=False),
            sa.Column("repository", sa.String(300), nullable=False),
            sa.Column("service", sa.String(200), nullable=False),
            sa.Column("environment", sa.String(200), nullable=False),
            sa.Column("version", sa.String(200), nullable=False),
            sa.Column("commit_sha", sa.String(64), nullable=False),
            sa.Column("commit_url", sa.Text(), nullable=False),
            sa.Column("author_name", sa.String(200), nullable=False),
            sa.Column("author_email", sa.String(320), nullable=False),
            sa.Column("author_login", sa.String(200), nullable=False),
            sa.Column("run_url", sa.Text(), nullable=False),
            sa.Column("run_id", sa.String(200), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("last_event", sa.String(100), nullable=False),
            sa.Column("details", sa.Text(), nullable=False),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("suspect", sa.Boolean(), nullable=False),
            sa.Column("channel", sa.String(100), nullable=False),
            sa.Column("rollback_executor", sa.String(100), nullable=False),
            sa.Column("message_ts", sa.String(40), nullable=True),
            sa.Column("thread_ts", sa.String(40), nullable=True),
            sa.Column("rollback_state", sa.String(20), nullable=True),
            sa.Column("rollback_by", sa.String(100), nullable=True),
            sa.Column("rollback_target_id", sa.Integer(), nullable=True),
            sa.Column("rollback_url", sa.Text(), nullable=True),
            sa.Column("rollback_detail", sa.Text(), nullable=True),
            sa.Column("rollback_started_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("rollback_job", sa.String(200), nullable=True),
            sa.Column("rollback_sent_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("rollback_finished_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("run_key"),
            sqlite_autoincrement=True,  # ids are referenced by buttons: never reuse one
        )
        op.create_index("ix_deploys_deployments_service", "deploys_deployments", ["service"])
    if missing("deploys_deliveries"):
        op.create_table(
            "deploys_deliveries",
            sa.Column("delivery_key", sa.String(300), nullable=False),
            sa.Column("deployment_id", sa.Integer(), nullable=True),
            sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("delivery_key"),
        )
    if missing("deploys_locks"):
        op.create_table(
            "deploys_locks",
            sa.Column("service", sa.String(200), nullable=False),
            sa.Column("environment", sa.String(200), nullable=False),
            sa.Column("locked_by", sa.String(100), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("locked_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("service", "environment"),
        )

    # controlroom.workflows.escalations.naming and .ledger
    if missing("escalation_sequences"):
        op.create_table(
            "escalation_sequences",
            sa.Column("workspace", sa.String(64), nullable=False),
            sa.Column("year", sa.Integer(), nullable=False),
            sa.Column("value", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("workspace", "year"),
        )
    if missing("escalations"):
        op.create_table(
            "escalations",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("workspace", sa.String(64), nullable=False),
            sa.Column("source_channel", sa.String(64), nullable=False),
            sa.Column("source_ts", sa.String(32), nullable=False),
            sa.Column("claimant", sa.String(255), nullable=False),
            sa.Column("escalated_by", sa.String(64), nullable=False),
            sa.Column("state", sa.String(32), nullable=False),
            sa.Column("account_id", sa.String(120), nullable=True),
            sa.Column("customer_name", sa.String(200), nullable=True),
            sa.Column("crm_pending", sa.Boolean(), nullable=False),
            sa.Column("seq", sa.Integer(), nullable=True),
            sa.Column("room_name", sa.String(80), nullable=True),
            sa.Column("room_channel_id", sa.String(64), nullable=True),
            sa.Column("invited", sa.JSON(), nullable=True),
            sa.Column("invite_failures", sa.JSON(), nullable=True),
            sa.Column("briefing_ts", sa.String(32), nullable=True),
            sa.Column("pointer_ts", sa.String(32), nullable=True),
            sa.Column("resolved_by", sa.String(64), nullable=True),
            sa.Column("summary_ts", sa.String(32), nullable=True),
            sa.Column("last_error", sa.Text(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint(
                "workspace", "source_channel", "source_ts", name="uq_escalations_source"
            ),
            sa.UniqueConstraint("workspace", "room_channel_id", name="uq_escalations_room"),
        )
        op.create_index("ix_escalations_state", "escalations", ["state"])


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
