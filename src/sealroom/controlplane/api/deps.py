"""Request dependencies: the control plane instance and authenticated principals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sealroom.controlplane.services.auth import AgentPrincipal, Principal
from sealroom.controlplane.state import ControlPlane

_bearer = HTTPBearer(auto_error=False, description="API key (srk_...) or agent credential")


async def get_cp(request: Request) -> ControlPlane:
    cp: ControlPlane = request.app.state.cp
    return cp


def _token(creds: HTTPAuthorizationCredentials | None) -> str | None:
    return creds.credentials if creds is not None else None


def get_user(
    cp: Annotated[ControlPlane, Depends(get_cp)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return cp.auth.authenticate_user(_token(creds))


def get_optional_user(
    cp: Annotated[ControlPlane, Depends(get_cp)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    if creds is None:
        return None
    return cp.auth.authenticate_user(_token(creds))


def get_agent(
    cp: Annotated[ControlPlane, Depends(get_cp)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AgentPrincipal:
    return cp.auth.authenticate_agent(_token(creds))


CP = Annotated[ControlPlane, Depends(get_cp)]
User = Annotated[Principal, Depends(get_user)]
OptionalUser = Annotated[Principal | None, Depends(get_optional_user)]
Agent = Annotated[AgentPrincipal, Depends(get_agent)]
