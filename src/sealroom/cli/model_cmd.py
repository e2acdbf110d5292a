"""`sealroom model ...`: confidential model execution (docs/adr/0040)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from sealroom.attestation.policy import Policy
from sealroom.cli.common import console, home_dir, print_json, render_result, simulated_banner
from sealroom.cli.enclave_cmd import JsonOpt, RootOpt, load_party, trusted_roots
from sealroom.cli.service_cmd import verdict_rows
from sealroom.client.controlplane import ControlPlaneClient
from sealroom.client.model import ModelClient, verify_answer_file
from sealroom.errors import InvalidInputError
from sealroom.files import write_private
from sealroom.hostagent.launcher import launch_local, runtime_measurement
from sealroom.protocol.model import load_model_spec, pin_model

model_app = typer.Typer(
    help="Hash-pinned models served by attested enclaves; sealed prompts, signed answers.",
    no_args_is_help=True,
)

UrlArg = Annotated[str, typer.Argument(help="https://HOST:PORT of the model server")]
ModelOpt = Annotated[Path, typer.Option("--model", help="the model spec (from `model pin`)")]
PolicyReq = Annotated[Path, typer.Option("--policy", help="Your appraisal policy.")]


@model_app.command("pin")
def pin_cmd(
    weights: Annotated[Path, typer.Argument(help="the model file (ONNX)")],
    name: Annotated[str, typer.Option("--name", help="model name")],
    out: Annotated[Path, typer.Option("--out", help="where to write the model spec (JSON)")],
    version: Annotated[str, typer.Option("--version", help="model version")] = "1",
    licence: Annotated[str, typer.Option("--licence", help="licence note")] = "",
) -> None:
    """Pin a model by its SHA-256: writes the spec an enclave serving it binds."""
    spec = pin_model(weights, name, version, licence)
    out.write_text(json.dumps(spec.to_json_obj(), indent=1) + "\n")
    typer.echo(f"{spec.name} {spec.model_version} sha256 {spec.sha256} ({spec.size} bytes)")
    typer.echo(f"model spec hash (HOST_DATA): {spec.spec_hash.hex()}  -> {out}")


@model_app.command("register")
def register_cmd(
    model: Annotated[Path, typer.Argument(help="the model spec (from `model pin`)")],
    as_json: JsonOpt = False,
) -> None:
    """Register a pinned model with the control plane (`sealroom login` first); it is then
    listed in /api/v1/compute/status as available_models."""
    spec = load_model_spec(model)
    m = ControlPlaneClient.from_config().register_model(spec.to_json_obj())
    if as_json:
        print_json(m.model_dump(mode="json"))
        return
    typer.echo(f"registered {m.name}:{m.model_version} ({m.id}) sha256 {m.sha256}")


@model_app.command("list")
def list_cmd(as_json: JsonOpt = False) -> None:
    """The control plane's registered models."""
    models = ControlPlaneClient.from_config().models()
    if as_json:
        print_json([m.model_dump(mode="json") for m in models])
        return
    table = Table(title="registered models")
    for col in ("name", "version", "format", "sha256", "size", "owner", "licence"):
        table.add_column(col, overflow="fold")
    for m in models:
        table.add_row(m.name, m.model_version, m.format, m.sha256, str(m.size), m.owner, m.licence)
    console.print(table)


@model_app.command("policy")
def policy_cmd(
    model: ModelOpt,
    out: Annotated[Path, typer.Option("--out", help="where to write the policy (YAML)")],
    allow_simulated: Annotated[
        bool, typer.Option("--allow-simulated", help="accept SIMULATED evidence (sim TEE)")
    ] = False,
) -> None:
    """A starter policy: SNP, this installation's runtime measurement, REPORT_DATA bound
    sealroom-v1, HOST_DATA = the model spec hash."""
    doc = {
        "version": 1,
        "id": "model-policy",
        "allow_simulated": allow_simulated,
        "require": ["snp"],
        "snp": {
            "measurements": [runtime_measurement().hex()],
            "report_data": {"mode": "sealroom-v1"},
            "host_data": load_model_spec(model).spec_hash.hex(),
            "allow_debug": False,
        },
    }
    Policy.loads(yaml.safe_dump(doc))
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    typer.echo(f"wrote {out}" + (" (accepts SIMULATED evidence)" if allow_simulated else ""))


@model_app.command("serve")
def serve_cmd(
    model: ModelOpt,
    weights: Annotated[Path, typer.Option("--weights", help="the model file")],
    tee: Annotated[str, typer.Option("--tee", help="sim | configfs-tsm | tpm2:TCTI")] = "sim",
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT (loopback)")] = "127.0.0.1:0",
    as_json: JsonOpt = False,
) -> None:
    """Start a model-serving enclave (refuses weights whose hash is not pinned)."""
    enclave = launch_local(model, tee=tee, listen=listen, home=home_dir(), weights=weights)
    try:
        info: dict[str, object] = {
            "url": enclave.url,
            "model_spec_hash": enclave.manifest_hash,
            "simulated": enclave.simulated,
        }
        if as_json:
            sys.stdout.write(json.dumps(info) + "\n")
            sys.stdout.flush()
        else:
            if enclave.simulated:
                simulated_banner()
            console.print(f"model server on [bold]{enclave.url}[/] spec {enclave.manifest_hash}")
        enclave.wait()
    except KeyboardInterrupt:
        pass
    finally:
        enclave.stop()


def _client(url: str, policy: Path, model: Path, root: list[Path]) -> ModelClient:
    return ModelClient(
        url, Policy.load(policy), load_model_spec(model), extra_roots=trusted_roots(root)
    )


@model_app.command("verify")
def verify_cmd(
    url: UrlArg,
    policy: PolicyReq,
    model: ModelOpt,
    root: RootOpt = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Fresh nonce -> evidence -> your policy; the model spec hash; the TLS key."""
    client = _client(url, policy, model, root)
    try:
        attested = client.attest()
    finally:
        if client.attested is not None and not as_json:
            render_result(client.attested.appraisal)
    if as_json:
        print_json(
            {
                "url": client.url,
                "simulated": attested.simulated,
                "model_spec_hash": attested.spec_hash.hex(),
                "model": attested.measured_spec,
                "keys_digest": attested.keys.digest.hex(),
                "appraisal": attested.appraisal.to_dict(),
            }
        )
        return
    table = Table(title=f"model server {client.url}: ACCEPTED")
    for col in ("check", "verdict", "detail"):
        table.add_column(col)
    for row in verdict_rows(attested, client.url, "--model"):
        table.add_row(*row)
    console.print(table)


def _inputs(text: str) -> dict[str, Any]:
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        obj = json.loads(raw)
    except ValueError as e:
        raise InvalidInputError(f"--input is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise InvalidInputError('--input must be an object: {"NAME": [[...]]}')
    return obj


@model_app.command("infer")
def infer_cmd(
    url: UrlArg,
    policy: PolicyReq,
    model: ModelOpt,
    key: Annotated[str, typer.Option("--key", help="your key: the answer is sealed to it")],
    input_: Annotated[str, typer.Option("--input", help='JSON {"NAME": nested list}, or @FILE')],
    answer: Annotated[
        Path | None,
        typer.Option("--answer", help="keep the signed answer (0600) for `verify-response`"),
    ] = None,
    root: RootOpt = [],  # noqa: B006
) -> None:
    """Verify the server, seal the input to its attested key, check the signed answer."""
    party = load_party(key)
    client = _client(url, policy, model, root)
    try:
        attested = client.attest()
        if attested.simulated:
            print(
                "sealroom: SIMULATED TEE evidence (verified under allow_simulated)", file=sys.stderr
            )
        result = client.infer(_inputs(input_), party.x25519)
    finally:
        client.close()
    if answer is not None:
        write_private(answer, result.bundle_bytes(), overwrite=True, what="answer file")
    sys.stdout.write(json.dumps(result.response) + "\n")
    if "error" in result.response:
        raise typer.Exit(1)


@model_app.command("verify-response")
def verify_response_cmd(
    answer: Annotated[Path, typer.Argument(help="an answer file from `model infer --answer`")],
    policy: PolicyReq,
    model: ModelOpt,
    root: RootOpt = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Offline: the evidence (your policy, your model spec), the enclave's signature over
    the request, the response, the model hash and the evidence digest."""
    try:
        raw = answer.read_bytes()
    except OSError as e:
        raise InvalidInputError(f"cannot read {answer}: {e.strerror or e}") from e
    v = verify_answer_file(
        raw, Policy.load(policy), load_model_spec(model), extra_roots=trusted_roots(root)
    )
    if as_json:
        print_json(
            {
                "verified": True,
                "simulated": v.simulated,
                "statement": v.statement.model_dump(mode="json"),
                "response": v.response,
            }
        )
        return
    if v.simulated:
        simulated_banner()
    st = v.statement
    console.print(
        f"VERIFIED: model {st.model} {st.model_version} (sha256 {st.model_sha256}) answered "
        f"at {st.answered_at}, signed by the attested enclave (keys {st.keys_digest[:16]}…)"
    )
    sys.stdout.write(json.dumps(v.response) + "\n")
