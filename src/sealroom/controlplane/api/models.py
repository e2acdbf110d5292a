"""The model registry (docs/adr/0040): ``POST /api/v1/models`` registers a pinned model
spec (name, version, format, SHA-256 and size of the weights), ``GET /api/v1/models``
lists them; ``/api/v1/compute/status`` names them in ``available_models``. The registry
holds facts, not weights and not trust: a party trusts an enclave serving a model only
after its evidence proves the spec hash (``sealroom model verify``)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Body
from sqlalchemy import select

from sealroom.controlplane.api.deps import CP, User
from sealroom.controlplane.api.users import ERRORS
from sealroom.controlplane.services.auth import new_id
from sealroom.controlplane.state import ControlPlane
from sealroom.controlplane.store.models import Account, RegisteredModel
from sealroom.errors import ConflictError
from sealroom.protocol.api import ModelOut, ModelsOut
from sealroom.protocol.model import parse_model_spec

router = APIRouter(prefix="/api/v1")


def _out(m: RegisteredModel, owner: str) -> ModelOut:
    return ModelOut(
        id=m.id,
        name=m.name,
        model_version=m.model_version,
        format=m.format,
        sha256=m.sha256,
        size=m.size,
        licence=m.licence,
        spec_hash=m.spec_hash,
        owner=owner,
        created_at=m.created_at,
    )


@router.post("/models", status_code=201, responses=ERRORS)
def register_model(cp: CP, user: User, body: dict[str, Any] = Body(...)) -> ModelOut:  # noqa: B008
    """Register a model spec (from `sealroom model pin`). The same name and version with
    another hash is a conflict: a registered version never changes its weights."""
    spec = parse_model_spec(body, "model spec")
    with cp.store.session() as s:
        old = s.scalar(
            select(RegisteredModel).where(
                RegisteredModel.name == spec.name,
                RegisteredModel.model_version == spec.model_version,
            )
        )
        if old is not None:
            if old.spec_hash != spec.spec_hash.hex():
                raise ConflictError(
                    f"model {spec.name} version {spec.model_version} is registered with spec "
                    f"hash {old.spec_hash}; a new weights file needs a new version",
                    code="model-version-taken",
                )
            owner = s.get(Account, old.owner_id)
            return _out(old, owner.name if owner else "")
        m = RegisteredModel(
            id=new_id("mdl_"),
            name=spec.name,
            model_version=spec.model_version,
            format=spec.format,
            sha256=spec.sha256,
            size=spec.size,
            licence=spec.licence,
            spec_hash=spec.spec_hash.hex(),
            spec=json.dumps(spec.to_json_obj()),
            owner_id=user.account_id,
            created_at=cp.settings.clock(),
        )
        s.add(m)
        s.commit()
        return _out(m, user.name)


@router.get("/models", responses=ERRORS)
def list_models(cp: CP, user: User) -> ModelsOut:
    """Every registered model (the catalog is shared by the installation's accounts)."""
    with cp.store.session() as s:
        rows = s.execute(
            select(RegisteredModel, Account.name)
            .join(Account, Account.id == RegisteredModel.owner_id)
            .order_by(RegisteredModel.name, RegisteredModel.model_version)
        ).all()
        return ModelsOut(models=[_out(m, owner) for m, owner in rows])


def available_models(cp: ControlPlane) -> list[str]:
    """``NAME:VERSION`` of every registered model, for the public status answer."""
    with cp.store.session() as s:
        rows = s.execute(
            select(RegisteredModel.name, RegisteredModel.model_version).order_by(
                RegisteredModel.name, RegisteredModel.model_version
            )
        ).all()
    return [f"{n}:{v}" for n, v in rows]
