"""sealed subscription secrets

Revision ID: 0008
Revises: 0007

Issue 11 (security): a subscription's signing secret and its header values
are stored encrypted (``ferryman.secret_box``: ``fmbox1:<Fernet token>``)
with ``FERRYMAN_SECRET_KEY`` or the home's generated key. No column changes
type (``secret`` stays text, ``headers`` a JSON object: its keys stay
readable); this migration seals the rows written before, and ``downgrade``
opens them again. Rows already sealed are left as they are, so running it
twice, or alongside ``ferryman db reseal``, is harmless.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op

from ferryman.secret_box import NoKey, SecretBox
from ferryman.store.tables import JSONType

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Plain columns: the rows are read and written as stored, not through the
# store's sealing column types.
_subs = sa.table(
    "subscriptions",
    sa.column("id", sa.String),
    sa.column("secret", sa.Text),
    sa.column("headers", JSONType),
)


def _box() -> SecretBox:
    store: Any = context.config.attributes.get("store")
    box = getattr(store, "secret_box", None)
    return box if isinstance(box, SecretBox) else NoKey()


def _rewrite(change: Any) -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(_subs.c.id, _subs.c.secret, _subs.c.headers)).all()
    for row in rows:  # few rows: one statement each
        headers = row.headers or {}
        bind.execute(
            sa.update(_subs)
            .where(_subs.c.id == row.id)
            .values(
                secret=change(row.secret),
                headers={k: change(v) if isinstance(v, str) else v for k, v in headers.items()},
            )
        )


def upgrade() -> None:
    if op.get_bind().execute(sa.select(sa.func.count()).select_from(_subs)).scalar():
        _rewrite(_box().seal)  # the key is needed (and loaded) only when there are rows


def downgrade() -> None:
    if op.get_bind().execute(sa.select(sa.func.count()).select_from(_subs)).scalar():
        _rewrite(_box().open)
