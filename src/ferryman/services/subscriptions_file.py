"""The subscriptions file (``FERRYMAN_SUBSCRIPTIONS_FILE``): read and reconciled.

Subscriptions from the file are rows with ``source="file"``, reconciled by
name whenever the file changes (the deliverer watches it); they are changed
in the file, not through the API or the CLI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from ferryman.errors import InvalidInput
from ferryman.http import PERMISSIVE, DestinationPolicy
from ferryman.services.subscriptions import (
    SubscriptionCreate,
    SubscriptionUpdate,
    check_destination,
    create_subscription,
    delete_subscription,
    update_subscription,
)
from ferryman.store.tables import subscriptions


class FileError(ValueError):
    """A subscriptions file that cannot be used; the message lists every problem."""


def read_file(path: Path) -> list[SubscriptionCreate]:
    """Parse and validate a subscriptions file (YAML or JSON).

    The file is a list of entries, or a mapping with a ``subscriptions`` list.
    An entry may give ``secret_env: NAME`` to read its secret from the
    environment instead of writing it in the file.
    """
    from ferryman.yaml_reader import YamlError, parse_yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise FileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        # YAML through the one bounded reader: no alias bombs, no duplicate keys
        data = json.loads(text) if path.suffix == ".json" else parse_yaml(text)
    except YamlError as exc:
        raise FileError(f"{path}: {exc}") from None
    except ValueError as exc:
        raise FileError(f"{path}: not valid JSON: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and "subscriptions" in data:
        data = data["subscriptions"]
    if data is None:
        data = []
    if not isinstance(data, list):
        raise FileError(f"{path}: expected a list of subscriptions")
    problems: list[str] = []
    out: list[SubscriptionCreate] = []
    seen: set[str] = set()
    for i, entry in enumerate(data):
        where = f"entry {i + 1}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a mapping")
            continue
        entry = dict(entry)
        if isinstance(entry.get("name"), str):
            where = f"entry {i + 1} ({entry['name']})"
        env = entry.pop("secret_env", None)
        if env is not None:
            value = os.environ.get(str(env))
            if not value:
                problems.append(f"{where}: secret_env: environment variable {env} is not set")
                continue
            entry["secret"] = value
        try:
            spec = SubscriptionCreate.model_validate(entry)
        except ValidationError as exc:
            for e in exc.errors():
                loc = ".".join(str(x) for x in e["loc"]) or "(entry)"
                problems.append(f"{where}: {loc}: {e['msg']}")
            continue
        if spec.name in seen:
            problems.append(f"{where}: the name {spec.name!r} is used twice")
            continue
        seen.add(spec.name)
        out.append(spec)
    if problems:
        raise FileError(f"{path}: " + "; ".join(problems))
    return out


def reconcile_file(
    conn: Connection,
    specs: Sequence[SubscriptionCreate],
    *,
    policy: DestinationPolicy = PERMISSIVE,
) -> list[str]:
    """Make the ``source="file"`` subscriptions equal to ``specs`` (by name).

    New names are created, changed ones updated (the secret only when the
    file gives one: a generated secret is kept), missing ones deleted. A name
    already used by an API subscription is skipped. Returns what changed.
    A URL the destination ``policy`` refuses is a ``FileError`` (nothing of
    the file is applied).
    """
    refused = []
    for spec in specs:
        try:
            check_destination(spec.url, policy)
        except InvalidInput as exc:
            refused.append(f"{spec.name}: {exc}")
    if refused:
        raise FileError("; ".join(refused))
    existing = {r.name: r for r in conn.execute(sa.select(subscriptions))}
    changes: list[str] = []
    wanted = {s.name for s in specs}
    for spec in specs:
        row = existing.get(spec.name)
        if row is None:
            create_subscription(conn, spec, source="file", policy=policy)
            changes.append(f"added {spec.name}")
            continue
        if row.source != "file":
            changes.append(f"skipped {spec.name} (a subscription made through the API has it)")
            continue
        fields = spec.model_dump(exclude={"name", "secret"})
        fields["event_types"] = [str(t) for t in spec.event_types]
        current = {k: getattr(row, k) for k in fields}
        same = all(current[k] == v for k, v in fields.items() if k != "enabled")
        # A file entry switched off by a 410 stays off until the file changes it.
        enabled_same = bool(row.enabled) == spec.enabled or (
            not row.enabled and row.disabled_reason is not None and spec.enabled
        )
        secret_same = spec.secret is None or spec.secret == row.secret
        if same and enabled_same and secret_same:
            continue
        update_subscription(
            conn,
            row.id,
            SubscriptionUpdate.model_validate(
                {**fields, **({"secret": spec.secret} if spec.secret else {})}
            ),
            source="file",
            policy=policy,
        )
        changes.append(f"updated {spec.name}")
    for name, row in existing.items():
        if row.source == "file" and name not in wanted:
            delete_subscription(conn, row.id, source="file")
            changes.append(f"removed {name}")
    return changes
