"""``sealroom kbs``: the key broker (Trustee KBS protocol 0.4.0) and its admin commands."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from sealroom.cli.common import console, home_dir, print_json
from sealroom.errors import (
    AccessDeniedError,
    InvalidInputError,
    NotFoundError,
    SealroomError,
    UnavailableError,
)

kbs_app = typer.Typer(no_args_is_help=True, help="Key broker (Trustee KBS protocol, RCAR 0.4.0).")
resource_app = typer.Typer(no_args_is_help=True, help="Resources held by the key broker.")
policy_app = typer.Typer(no_args_is_help=True, help="Resource and attestation policies.")
kbs_app.add_typer(resource_app, name="resource")
kbs_app.add_typer(policy_app, name="policy")

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="KBS URL (default $SEALROOM_KBS_URL or the `sealroom up` one)."),
]
KeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--admin-key", help="Admin key file (default $SEALROOM_KBS_ADMIN_KEY or `sealroom up`'s)."
    ),
]


def _stack_kbs() -> tuple[str | None, Path | None]:
    from sealroom import paths
    from sealroom.cli import stack

    st = stack.status(paths.stack_dir())
    if st is None or not st.kbs_url:
        return None, None
    return st.kbs_url, Path(st.data_dir) / "kbs" / "admin.key"


def _target(url: str | None, key: Path | None, *, need_key: bool = True) -> tuple[str, str]:
    s_url, s_key = _stack_kbs() if (url is None or key is None) else (None, None)
    url = url or os.environ.get("SEALROOM_KBS_URL") or s_url
    env_key = os.environ.get("SEALROOM_KBS_ADMIN_KEY")
    key = key or (Path(env_key) if env_key else None) or s_key
    if not url:
        raise InvalidInputError("no KBS: pass --url, set SEALROOM_KBS_URL or run `sealroom up`")
    secret = ""
    if need_key:
        if key is None or not key.is_file():
            raise InvalidInputError(
                "no admin key: pass --admin-key FILE (printed by `sealroom kbs serve`)"
            )
        secret = key.read_text().strip()
    return url.rstrip("/"), secret


def _call(method: str, url: str, key: str, path: str, **kw: Any) -> httpx.Response:
    try:
        r = httpx.request(
            method, url + path, headers={"Authorization": f"Bearer {key}"}, timeout=60, **kw
        )
    except httpx.HTTPError as e:
        raise UnavailableError(f"KBS {url} unreachable: {e}") from e
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        cls = NotFoundError if r.status_code == 404 else AccessDeniedError
        raise cls(f"KBS answered {r.status_code}: {detail}")
    return r


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@kbs_app.command("serve")
def serve_cmd(
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT")] = "127.0.0.1:8090",
    data_dir: Annotated[Path, typer.Option("--data-dir", help="State directory.")] = Path(
        "kbs-data"
    ),
    db_url: Annotated[
        str | None, typer.Option("--db-url", help="PostgreSQL URL shared by replicas.")
    ] = None,
    root: Annotated[
        list[Path], typer.Option("--root", help="Extra trusted root (PEM), e.g. a sim ARK.")
    ] = [],  # noqa: B006
    kms_dir: Annotated[
        Path | None,
        typer.Option(
            "--kms-dir",
            help="Key manager to serve as kms/<key>/... (default $SEALROOM_HOME/kms when "
            "`sealroom kms init` made one there).",
        ),
    ] = None,
) -> None:
    """Serve the KBS (/kbs/v0) and the attestation service (/api/v1/attestation)."""
    from sealroom.kbs.serve import run
    from sealroom.kms.store import CONFIG_NAME

    if kms_dir is None:
        default = home_dir() / "kms"
        kms_dir = default if (default / CONFIG_NAME).is_file() else None
    elif not (kms_dir / CONFIG_NAME).is_file():
        raise InvalidInputError(
            f"--kms-dir {kms_dir}: no KMS there (sealroom kms init --data-dir {kms_dir})"
        )
    run(data_dir, listen, db_url=db_url, roots=root, kms_dir=kms_dir)


@resource_app.command("put")
def resource_put(
    path: Annotated[str, typer.Argument(help="<repository>/<type>/<tag>")],
    file: Annotated[Path, typer.Option("--file", help="Read the value from this file.")],
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
) -> None:
    """Store a resource (the value is read from a file, never from argv)."""
    u, k = _target(url, admin_key)
    try:
        value = file.read_bytes()
    except OSError as e:
        raise InvalidInputError(f"cannot read {file}: {e.strerror}") from e
    _call("POST", u, k, f"/kbs/v0/resource/{path}", content=value)
    console.print(f"stored {path} ({len(value)} bytes)")


@resource_app.command("delete")
def resource_delete(
    path: Annotated[str, typer.Argument(help="<repository>/<type>/<tag>")],
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
) -> None:
    u, k = _target(url, admin_key)
    _call("DELETE", u, k, f"/kbs/v0/resource/{path}")
    console.print(f"deleted {path}")


@resource_app.command("list")
def resource_list(url: UrlOpt = None, admin_key: KeyOpt = None) -> None:
    u, k = _target(url, admin_key)
    print_json(_call("GET", u, k, "/kbs/v0/resources").json())


@resource_app.command("get")
def resource_get(
    path: Annotated[str, typer.Argument(help="<repository>/<type>/<tag>")],
    out: Annotated[Path, typer.Option("--out", help="Write the released value here (0600).")],
    tee: Annotated[
        str,
        typer.Option(
            "--tee",
            help="Evidence provider: sim:SOCKET, sev-guest, configfs-tsm, or 'sim-authority' "
            "(this machine's sim authority, SIMULATED).",
        ),
    ] = "sim-authority",
    measurement: Annotated[
        str | None,
        typer.Option("--measurement", help="With --tee sim-authority: 48-byte hex."),
    ] = None,
    url: UrlOpt = None,
) -> None:
    """Fetch a resource as a guest does: attest (RCAR), then decrypt the JWE."""
    from sealroom.attestation.evidence import EvidenceBundle
    from sealroom.files import write_private
    from sealroom.kbs.client import KbsClient, envelope_evidence, report_data

    u, _ = _target(url, None, need_key=False)
    if tee == "sim-authority":
        from sealroom import paths
        from sealroom.attestation.sim.authority import SimAuthority

        auth = SimAuthority.load_or_create(paths.sim_authority())
        meas = bytes.fromhex(measurement) if measurement else bytes(48)

        def evidence(digest: bytes) -> Any:
            rep = auth.report(measurement=meas, report_data=report_data(digest))
            return envelope_evidence(EvidenceBundle.single(auth.evidence(rep)))

        console.print("[bold yellow]SIMULATED TEE evidence (sim authority)[/]")
    else:
        from sealroom.tee.base import open_provider

        provider = open_provider(tee)

        def evidence(digest: bytes) -> Any:
            item = provider.collect(report_data(digest))
            return envelope_evidence(EvidenceBundle.single(item))

    with KbsClient(u, "snp", evidence) as client:
        value = client.get_resource(path)
    write_private(out, value, overwrite=True, what="released resource")
    console.print(f"released {path}: {len(value)} bytes written to {out}")


@policy_app.command("set")
def policy_set(
    file: Annotated[Path, typer.Argument(help="Policy file (YAML/JSON).")],
    attestation: Annotated[
        bool,
        typer.Option(
            "--attestation", help="An attestation (appraisal) policy, not a resource policy."
        ),
    ] = False,
    policy_id: Annotated[
        str, typer.Option("--id", help="Attestation policy id (the KBS uses 'default').")
    ] = "default",
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
) -> None:
    """Set the resource policy (default) or, with --attestation, an attestation policy."""
    u, k = _target(url, admin_key)
    try:
        text = file.read_bytes()
    except OSError as e:
        raise InvalidInputError(f"cannot read {file}: {e.strerror}") from e
    if attestation:
        body = {"type": "sealroom", "policy_id": policy_id, "policy": _b64url(text)}
        _call("POST", u, k, "/kbs/v0/attestation-policy", json=body)
        _call("PUT", u, k, f"/api/v1/attestation/policies/{policy_id}", content=text)
    else:
        _call("POST", u, k, "/kbs/v0/resource-policy", json={"policy": _b64url(text)})
    console.print(f"{'attestation' if attestation else 'resource'} policy set")


@policy_app.command("show")
def policy_show(
    attestation: Annotated[bool, typer.Option("--attestation")] = False,
    policy_id: Annotated[str, typer.Option("--id")] = "default",
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
) -> None:
    u, k = _target(url, admin_key)
    if attestation:
        got = _call("GET", u, k, "/kbs/v0/attestation-policy", params={"policy_id": policy_id})
        text = got.json().get("policy")
        if text is None:
            raise NotFoundError(f"no attestation policy {policy_id!r}")
        typer.echo(text)
    else:
        doc = _call("GET", u, k, "/kbs/v0/resource-policy").json()
        if doc is None:
            raise NotFoundError("no resource policy is set")
        typer.echo(json.dumps(doc, indent=2))


__all__ = ["SealroomError", "kbs_app"]
