"""``sealroom manifest``: write a starting manifest, validate one, print its hash.

``init`` writes a complete version-1 manifest. Every party is named by a KEY reference:
a name in your key store (``sealroom keys new NAME``) or a JSON file holding a party's
public keys (what ``sealroom keys show NAME --json`` prints, sent to you by that party).
Anything not given on the command line is written as a ``REPLACE: ...`` placeholder,
which ``validate`` reports by field until it is filled in::

    sealroom manifest init --out m.json --tee sim \\
        --algorithm-key algo --algorithm avg.py \\
        --dataset a:dp1:a.csv --dataset b:dp2.pub.json \\
        --consumer alice

``--kbs-dataset NAME:KEY:SHA256:FILE.enc`` (with ``--kbs-url``): a slot the enclave fills
itself from the key broker (docs/adr/0027): FILE.enc is what ``sealroom data encrypt``
wrote (its header names the KMS key version, the resource asked for), SHA256 what it
printed. ``kbs-policy`` writes the broker's policies for such a manifest.

``--dataset NAME:KEY[:PATH]``: with PATH, its SHA-256 and size (as ``max_size``) are
filled in; without, a placeholder hash and a 1 MiB ``max_size``. A directory (for
``--algorithm`` too) is named by the hash of the deterministic tar that ``upload`` sends
for it, with ``archive: "tar"``: the enclave unpacks it (``sealroom checksum PATH`` prints
the same values). The limits have flags (``--vcpus``, ``--memory-mb``, ``--wall-seconds``,
``--max-result-bytes``). With ``--tee snp|tdx`` an id and a title not given are
placeholders: a real manifest never carries the sim template's ``demo-001``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from sealroom.client.enclave import content_digest
from sealroom.crypto.keys import PartyKeys, PartyPublic, key_path
from sealroom.errors import ConflictError, InvalidInputError
from sealroom.manifest import MANIFEST_VERSION, PLACEHOLDER, Limits, Manifest

manifest_app = typer.Typer(
    help="Computation manifests: write a starting one, validate, hash.", no_args_is_help=True
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _placeholder_party(name: str) -> dict[str, str]:
    return {
        "name": name,
        "ed25519": f"{PLACEHOLDER}ed25519 key of {name!r} (sealroom keys show {name} --json)",
        "x25519": f"{PLACEHOLDER}x25519 key of {name!r} (sealroom keys show {name} --json)",
    }


def _party(ref: str, option: str) -> dict[str, str]:
    """A KEY reference: a public-key JSON file, else a name in the key store."""
    p = Path(ref)
    if ref.endswith(".json") or "/" in ref:
        try:
            text = p.read_text()
        except OSError as e:
            raise InvalidInputError(
                f"{option} {ref}: cannot read public key file: {e.strerror or e}"
            ) from e
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidInputError(f"{option} {ref}: not JSON: {e}") from e
        if isinstance(obj, dict) and "sealroom_party_key" in obj:
            raise InvalidInputError(
                f"{option} {ref}: this is a private key file; use the public form "
                "(sealroom keys show NAME --json)",
                code="private-key-not-accepted",
            )
        return PartyPublic.from_json_obj(obj, f"{option} {ref}").to_json_obj()
    return PartyKeys.load(key_path(ref)).public.to_json_obj()


def digest(path: Path, option: str) -> tuple[str, int, str | None]:
    """SHA-256 (hex), size and archive kind of what `upload` sends for PATH: the file, or
    a directory's deterministic tar (archive "tar")."""
    try:
        sha, size, archive = content_digest(path)
    except OSError as e:
        raise InvalidInputError(f"{option} {path}: cannot read: {e.strerror or e}") from e
    except InvalidInputError as e:
        raise InvalidInputError(f"{option} {path}: {e.message}", code=e.code) from e
    return sha.hex(), size, archive


def _image_measurement(
    image: Path | None, ovmf: Path | None, vcpu_type: str, vcpus: int = 1
) -> str | None:
    """The SNP launch MEASUREMENT of a guest image (its vCPUs as the manifest's limits say),
    with sev-snp-measure; a warning on stderr when it covers the firmware only."""
    if image is None:
        return None
    from sealroom.hostagent.backends.qemu import OVMF
    from sealroom.image.build import GuestImage
    from sealroom.image.measure import expected_snp

    snp = expected_snp(GuestImage.load(image), ovmf or OVMF, vcpus=vcpus, vcpu_type=vcpu_type)
    if not snp.covers_kernel:
        typer.echo(f"WARNING: the launch measurement {snp.note}", err=True)
    return snp.measurement.hex()


def _policy(tee: str, manifest_id: str, measurement: str | None = None) -> dict[str, Any]:
    if manifest_id.startswith(PLACEHOLDER):
        manifest_id = "computation"  # the policy's own id needs no placeholder of its own
    binding = {"mode": "sealroom-v1"}  # REPORT_DATA binds manifest, enclave keys, nonce
    if tee == "sim":
        return {
            "version": 1,
            "id": f"{manifest_id}-sim",
            # Development only: sim evidence proves nothing about confidentiality.
            "allow_simulated": True,
            "max_evidence_age": 300,
            "require": ["snp"],
            "snp": {"report_data": binding},
        }
    if tee == "snp":
        return {
            "version": 1,
            "id": f"{manifest_id}-snp",
            "allow_simulated": False,
            "max_evidence_age": 300,
            "require": ["snp"],
            "snp": {
                "products": ["Milan", "Genoa", "Turin"],
                "measurements": [
                    measurement or f"{PLACEHOLDER}96-hex-digit launch MEASUREMENT of the runtime"
                ],
                "report_data": binding,
                "allow_debug": False,
            },
        }
    return {
        "version": 1,
        "id": f"{manifest_id}-tdx",
        "allow_simulated": False,
        "max_evidence_age": 300,
        "require": ["tdx"],
        "tdx": {
            "mrtd": [f"{PLACEHOLDER}96-hex-digit MRTD of the runtime image"],
            "report_data": binding,
            "allow_debug": False,
        },
    }


def _kbs_dataset(spec: str, kbs_url: str | None) -> dict[str, Any]:
    """One ``--kbs-dataset NAME:KEY:SHA256:FILE.enc`` slot."""
    from sealroom.crypto.dataset import read_header

    parts = spec.split(":", 3)
    if len(parts) != 4 or not all(parts):
        raise InvalidInputError(f"--kbs-dataset {spec!r}: want NAME:KEY:SHA256:FILE.enc")
    name, key, sha256, file = parts
    if not kbs_url:
        raise InvalidInputError("--kbs-dataset needs --kbs-url (the key broker's URL)")
    path = Path(file).resolve()
    try:
        with open(path, "rb") as f:
            header = read_header(f)
        size = path.stat().st_size
    except OSError as e:
        raise InvalidInputError(f"--kbs-dataset {name}: cannot read {file}: {e.strerror}") from e
    return {
        "name": name,
        "sha256": sha256.lower(),
        "provider": _party(key, f"--kbs-dataset {name}"),
        "max_size": max(1, size),  # the plaintext is smaller than its ciphertext
        "archive": None,
        "source": {
            "kbs": {
                "url": kbs_url.rstrip("/"),
                "resource": f"kms/{header.key_id}/v{header.version}",
                "ciphertext": str(path),
            }
        },
    }


def _placeholders(obj: Any, where: str = "manifest") -> list[str]:
    if isinstance(obj, str):
        return [where] if obj.startswith(PLACEHOLDER) else []
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _placeholders(v, f"{where}.{k}")]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _placeholders(v, f"{where}[{i}]")]
    return []


def _write_new(path: Path, text: str, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError as e:
        raise ConflictError(
            f"--out {path} exists; use --force to replace it", code="file-exists"
        ) from e
    except OSError as e:
        raise InvalidInputError(f"--out {path}: cannot write: {e.strerror or e}") from e
    with os.fdopen(fd, "w") as f:
        f.write(text)


@manifest_app.command("init")
def init_cmd(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here (default: standard output).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
    manifest_id: Annotated[
        str | None,
        typer.Option(
            "--id", help="Computation id (sim default: demo-001; snp/tdx: a placeholder)."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Human-readable title (sim default: Example computation; snp/tdx: a placeholder).",
        ),
    ] = None,
    tee: Annotated[
        str,
        typer.Option(
            "--tee",
            help="Enclave policy template: sim (development only), snp or tdx.",
        ),
    ] = "sim",
    algorithm_key: Annotated[
        str | None,
        typer.Option("--algorithm-key", help="KEY of the algorithm provider.", show_default=False),
    ] = None,
    algorithm: Annotated[
        Path | None,
        typer.Option(
            "--algorithm",
            help="Algorithm file or directory: fills sha256, max_size (and kind, entrypoint, "
            "archive).",
        ),
    ] = None,
    entrypoint: Annotated[
        str | None,
        typer.Option(
            "--entrypoint",
            help="Python file to run inside an --algorithm directory (default: main.py).",
        ),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="python | wasm | binary (default: from --algorithm suffix)."),
    ] = None,
    datasets: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset",
            help="NAME:KEY[:PATH], repeatable; PATH a file or a directory (sent as a tar).",
            show_default=False,
        ),
    ] = None,
    consumers: Annotated[
        list[str] | None,
        typer.Option("--consumer", help="KEY of a result consumer, repeatable."),
    ] = None,
    log_readers: Annotated[
        list[str] | None,
        typer.Option(
            "--log-reader",
            help="KEY of a party that may read the sealed run log besides the consumers "
            "(e.g. the algorithm provider), repeatable.",
        ),
    ] = None,
    kbs_datasets: Annotated[
        list[str] | None,
        typer.Option(
            "--kbs-dataset",
            help="NAME:KEY:SHA256:FILE.enc, repeatable: the enclave gets the key from the "
            "key broker and decrypts FILE.enc (sealroom data encrypt) itself.",
            show_default=False,
        ),
    ] = None,
    kbs_url: Annotated[
        str | None, typer.Option("--kbs-url", help="The key broker of --kbs-dataset slots.")
    ] = None,
    image: Annotated[
        Path | None,
        typer.Option(
            "--image",
            help="--tee snp: a guest image (sealroom image build) whose launch measurement "
            "fills the policy, with --ovmf and --vcpu-type.",
        ),
    ] = None,
    ovmf: Annotated[
        Path | None, typer.Option("--ovmf", help="With --image: the OVMF the launch uses.")
    ] = None,
    vcpu_type: Annotated[
        str, typer.Option("--vcpu-type", help="With --image: the guest CPU model.")
    ] = "EPYC-v4",
    vcpus: Annotated[int, typer.Option("--vcpus", help="vCPUs of the enclave's run.")] = 1,
    memory_mb: Annotated[int, typer.Option("--memory-mb", help="Memory of the run, MiB.")] = 512,
    wall_seconds: Annotated[
        int, typer.Option("--wall-seconds", help="Wall-clock limit of the run.")
    ] = 60,
    max_result_bytes: Annotated[
        int, typer.Option("--max-result-bytes", help="Largest result the run may produce.")
    ] = 10 * 1024 * 1024,
) -> None:
    """Write a complete starting manifest; unknown values become REPLACE placeholders."""
    if tee not in ("sim", "snp", "tdx"):
        raise InvalidInputError(f"--tee {tee!r}: want sim, snp or tdx")
    if image is not None and tee != "snp":
        raise InvalidInputError(f"--image computes an SNP measurement; --tee {tee} has none yet")
    if kind is not None and kind not in ("python", "wasm", "binary"):
        raise InvalidInputError(f"--kind {kind!r}: want python, wasm or binary")
    limits = {
        "vcpus": vcpus,
        "memory_mb": memory_mb,
        "wall_seconds": wall_seconds,
        "max_result_bytes": max_result_bytes,
    }
    try:
        Limits.model_validate(limits)
    except ValidationError as e:
        err = e.errors()[0]
        flag = "--" + str(err["loc"][0]).replace("_", "-")
        raise InvalidInputError(f"{flag} {err['input']!r}: {err['msg']}") from e
    if manifest_id is None:
        manifest_id = "demo-001" if tee == "sim" else f"{PLACEHOLDER}computation id"
    if name is None:
        name = "Example computation" if tee == "sim" else f"{PLACEHOLDER}title of the computation"

    alg: dict[str, Any] = {
        "kind": kind or "python",
        "sha256": f"{PLACEHOLDER}sha256 of the algorithm file (sha256sum FILE)",
        "provider": (
            _party(algorithm_key, "--algorithm-key")
            if algorithm_key
            else _placeholder_party("algo")
        ),
        "entrypoint": "main.py",
        "args": [],
        "archive": None,
    }
    if entrypoint is not None and (algorithm is None or not algorithm.is_dir()):
        raise InvalidInputError("--entrypoint names a file inside an --algorithm directory")
    if algorithm is not None:
        sha, size, archive = digest(algorithm, "--algorithm")
        alg["sha256"], alg["max_size"], alg["archive"] = sha, max(1, size), archive
        if archive is None:
            suffix = algorithm.suffix.lower()
            alg["kind"] = kind or {".py": "python", ".wasm": "wasm"}.get(suffix, "binary")
            alg["entrypoint"] = algorithm.name
        else:
            alg["entrypoint"] = entrypoint or "main.py"
            if not (algorithm / alg["entrypoint"]).is_file():
                raise InvalidInputError(
                    f"--algorithm {algorithm}: no {alg['entrypoint']} in it to run "
                    "(name the file with --entrypoint)"
                )
    if alg["kind"] != "python":
        alg.pop("entrypoint")

    ds: list[dict[str, Any]] = []
    for spec in datasets or []:
        parts = spec.split(":", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise InvalidInputError(f"--dataset {spec!r}: want NAME:KEY or NAME:KEY:FILE")
        entry: dict[str, Any] = {
            "name": parts[0],
            "sha256": f"{PLACEHOLDER}sha256 of dataset {parts[0]!r} (sha256sum FILE)",
            "provider": _party(parts[1], f"--dataset {parts[0]}"),
            "max_size": 1024 * 1024,
            "archive": None,
        }
        if len(parts) == 3:
            sha, size, archive = digest(Path(parts[2]), f"--dataset {parts[0]}")
            entry.update(sha256=sha, max_size=max(1, size), archive=archive)
        ds.append(entry)
    for spec in kbs_datasets or []:
        ds.append(_kbs_dataset(spec, kbs_url))
    if datasets is None and kbs_datasets is None:
        for n, owner in (("a", "dp1"), ("b", "dp2")):
            ds.append(
                {
                    "name": n,
                    "sha256": f"{PLACEHOLDER}sha256 of dataset {n!r} (sha256sum FILE)",
                    "provider": _placeholder_party(owner),
                    "max_size": 1024 * 1024,
                    "archive": None,
                }
            )
    cons = (
        [_party(c, "--consumer") for c in consumers] if consumers else [_placeholder_party("alice")]
    )

    doc: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "id": manifest_id,
        "name": name,
        "algorithm": alg,
        "datasets": ds,
        "consumers": cons,
        **(
            {"log_readers": [_party(r, "--log-reader") for r in log_readers]} if log_readers else {}
        ),
        "policy": _policy(tee, manifest_id, _image_measurement(image, ovmf, vcpu_type, vcpus)),
        "limits": limits,
    }
    text = json.dumps(doc, indent=2) + "\n"
    todo = _placeholders(doc)
    if not todo:
        Manifest.from_dict(doc)  # anything wrong in what we were given: say so now
    if out is None:
        sys.stdout.write(text)
    else:
        _write_new(out, text, force)
    where = str(out) if out is not None else "the manifest"
    if todo:
        typer.echo(
            f"{len(todo)} placeholder(s) to fill in {where}: {', '.join(todo)}; then run "
            "sealroom manifest validate",
            err=True,
        )
    elif out is not None:
        typer.echo(
            f"wrote {out}; manifest_hash {Manifest.from_dict(doc).manifest_hash.hex()}", err=True
        )
    if tee == "sim":
        typer.echo(
            "note: the sim policy accepts SIMULATED evidence, which proves nothing about "
            "confidentiality; use --tee snp or tdx for real data",
            err=True,
        )


def _load(file: Path) -> Manifest:
    if str(file) == "-":
        return Manifest.loads(sys.stdin.buffer.read(), "manifest (stdin)")
    return Manifest.load(file)


@manifest_app.command("validate")
def validate_cmd(
    file: Annotated[Path, typer.Argument(help="Manifest JSON file ('-' for stdin).")],
    json_out: JsonOpt = False,
) -> None:
    """Check a manifest; print what it names and its hash."""
    m = _load(file)
    pol = m.policy()
    summary = {
        "valid": True,
        "id": m.id,
        "name": m.name,
        "manifest_hash": m.manifest_hash.hex(),
        "algorithm": {"kind": m.algorithm.kind, "provider": m.algorithm.provider.name},
        "slots": [
            {"name": s.name, "provider": s.provider.name, "max_size": s.max_size} for s in m.slots()
        ],
        "consumers": [c.name for c in m.consumers],
        "log_readers": [r.name for r in m.log_readers],
        "policy": {
            "id": pol.id,
            "allow_simulated": pol.allow_simulated,
            "kinds": list(pol.sections),
        },
    }
    if json_out:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    typer.echo(f"valid manifest {m.id!r} ({m.name})")
    typer.echo(f"manifest_hash  {m.manifest_hash.hex()}")
    typer.echo(f"algorithm      {m.algorithm.kind}, provided by {m.algorithm.provider.name}")
    for s in m.slots():
        typer.echo(
            f"slot           {s.name}: signed by {s.provider.name}, at most {s.max_size} bytes"
        )
    typer.echo(f"consumers      {', '.join(c.name for c in m.consumers)}")
    readers = ", ".join(p.name for p in m.log_recipients)
    typer.echo(f"run log        sealed to {readers}")
    typer.echo(f"policy         {pol.id!r}, evidence kinds {', '.join(pol.sections)}")
    if pol.allow_simulated:
        typer.echo(
            "WARNING: the policy accepts SIMULATED TEEs: fine for development, never for real data"
        )


@manifest_app.command("hash")
def hash_cmd(
    file: Annotated[Path, typer.Argument(help="Manifest JSON file ('-' for stdin).")],
) -> None:
    """Print the manifest hash (hex SHA-256 of the RFC 8785 canonical form)."""
    typer.echo(_load(file).manifest_hash.hex())


@manifest_app.command("kbs-policy")
def kbs_policy_cmd(
    file: Annotated[Path, typer.Argument(help="Manifest JSON file with --kbs-dataset slots.")],
    release: Annotated[
        Path, typer.Option("--release", help="Write the resource (release) policy here.")
    ],
    attestation: Annotated[
        Path, typer.Option("--attestation", help="Write the attestation policy here.")
    ],
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """The key broker's policies for this manifest's KBS-sourced slots: each key version
    is released only to an enclave whose HOST_DATA is this manifest's hash and whose
    evidence passes the manifest's own policy (docs/adr/0027). Set them with `sealroom kbs
    policy set`."""
    m = _load(file)
    slots = [s for s in m.slots() if s.kbs is not None]
    if not slots:
        raise InvalidInputError(f"{file}: no KBS-sourced dataset (manifest init --kbs-dataset)")
    doc = json.loads(json.dumps(m.to_json_obj()["policy"]))
    doc["id"] = f"{m.id}-kbs"
    for section in doc.values():
        if isinstance(section, dict):
            # the broker binds REPORT_DATA itself (nonce + tee-pubkey, ADR 0024)
            section.pop("report_data", None)
    simulated = bool(doc.get("allow_simulated"))
    if simulated and isinstance(doc.get("snp"), dict) and not doc["snp"].get("measurements"):
        from sealroom.hostagent.launcher import runtime_measurement

        # the sim TEE measures this installation's runtime (SIMULATED)
        doc["snp"]["measurements"] = [runtime_measurement().hex()]
    kinds = doc.get("require") or list(m.policy().sections)
    rules = [
        {
            "resources": s.kbs.resource,
            "status": "warning" if simulated else "affirming",
            "allow_simulated": simulated,
            "kinds": kinds,
            "claims": {"host_data": [m.manifest_hash.hex()]},
        }
        for s in slots
        if s.kbs is not None
    ]
    policy = {"version": 1, "id": f"{m.id}-release", "rules": rules}
    _write_new(release, json.dumps(policy, indent=2) + "\n", force)
    _write_new(attestation, json.dumps(doc, indent=2) + "\n", force)
    typer.echo(f"wrote {release} ({len(rules)} rule(s), host_data {m.manifest_hash.hex()})")
    typer.echo(f"wrote {attestation}")
    if simulated:
        typer.echo("note: these policies accept SIMULATED evidence", err=True)


def checksum_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories.")],
    json_out: JsonOpt = False,
) -> None:
    """Print what a manifest names for each PATH (an algorithm or a dataset): the SHA-256
    and size of what `sealroom upload` sends, and archive "tar" for a directory (sent as
    its deterministic tar, unpacked in the enclave)."""
    out = []
    for p in paths:
        sha, size, archive = digest(p, "checksum")
        out.append({"path": str(p), "sha256": sha, "max_size": max(1, size), "archive": archive})
    if json_out:
        typer.echo(json.dumps(out, indent=2))
        return
    for e in out:
        fragment = {k: e[k] for k in ("sha256", "max_size", "archive")}
        what = "directory, sent as a tar" if e["archive"] else "file"
        typer.echo(f"{e['path']} ({what}):\n  {json.dumps(fragment)}")
