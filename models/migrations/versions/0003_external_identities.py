"""External identities: the users an external identity provider (JWT_JWKS_URL) signs in.

Revision ID: 0003_external_identities
Revises: 0002_idempotency_keys
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision = "0003_external_identities"
down_revision = "0002_idempotency_keys"
branch_labels = None
depends_on = None

# Frozen copy of the model type: a migration must not change when models/ does.
UTC_DATETIME = sa.DateTime(timezone=False).with_variant(mssql.DATETIME2(precision=6), "mssql")


def upgrade() -> None:
    op.create_table(
        "external_identities",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("identity_key", sa.String(64), nullable=False),
        sa.Column("issuer", sa.Unicode(1000), nullable=False),
        sa.Column("subject", sa.Unicode(255), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_external_identities_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_external_identities")),
        sa.UniqueConstraint("identity_key", name=op.f("uq_external_identities_identity_key")),
    )
    op.create_index(op.f("ix_external_identities_user_id"), "external_identities", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_external_identities_user_id"), table_name="external_identities")
    op.drop_table("external_identities")
