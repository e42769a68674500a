"""ferryman's secret store (admins only): set, list and remove secrets.

Values go in and never come out: no route returns one, and the listing shows
names, when each was set and by whom. Steps get them at dispatch (the
``store`` secret resolver), for the names they declare.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from ferryman.api.deps import Admin, StoreDep
from ferryman.api.secret_schemas import SecretList, SecretPublic, SecretSet
from ferryman.services import secret_store

router = APIRouter(tags=["secrets"])

SecretName = Annotated[
    str, Path(max_length=128, description="The secret's name, e.g. CAST_API_KEY")
]

_ADMIN_ONLY: dict[int | str, dict[str, Any]] = {403: {"description": "only admins manage secrets"}}


@router.get("/secrets", response_model=SecretList, summary="List secrets (never their values)",
            responses=_ADMIN_ONLY)  # fmt: skip
def list_secrets(_: Admin, store: StoreDep) -> SecretList:
    with store.read() as conn:
        items = secret_store.list_secrets(conn)
    return SecretList(items=[SecretPublic.model_validate(i) for i in items])


@router.put(
    "/secrets/{name}",
    response_model=SecretPublic,
    summary="Set a secret (created or replaced; the value is never returned)",
    responses={**_ADMIN_ONLY, 400: {"description": "a reserved or invalid name, a bad value"}},
)
def set_secret(
    name: SecretName, body: SecretSet, who: Admin, store: StoreDep, response: Response
) -> SecretPublic:
    secret_store.check_value(name, body.value.get_secret_value())
    with store.write() as conn:
        row = secret_store.set_secret(conn, name, body.value.get_secret_value(), by=who.username)
    response.status_code = 201 if row["created"] else 200
    return SecretPublic.model_validate(row)


@router.delete(
    "/secrets/{name}",
    status_code=204,
    response_class=Response,
    summary="Remove a secret",
    responses={**_ADMIN_ONLY, 404: {"description": "no such secret"}},
)
def delete_secret(name: SecretName, _: Admin, store: StoreDep) -> Response:
    with store.write() as conn:
        secret_store.delete_secret(conn, name)
    return Response(status_code=204)
