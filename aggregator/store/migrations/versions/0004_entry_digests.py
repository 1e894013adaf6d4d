"""Digests of the entries of each source's last ingested feed body, so a changed feed's
unchanged entries are recognised before they are normalized again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sources", sa.Column("entry_digests", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    op.drop_column("sources", "entry_digests")
