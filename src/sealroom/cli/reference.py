"""The file formats users write, documented from their schemas (issue 15):
``python -m sealroom.cli.reference > docs/reference.md``. The models that parse the files
are the source; ``tests/cli/test_reference.py`` fails when the page is not regenerated
after one of them changes, or when a note below names a field that no longer exists."""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import BaseModel

from sealroom.manifest import _ManifestModel
from sealroom.protocol.service import ServiceSpec

# What a schema cannot say: the meaning. Keyed by (section, field).
NOTES: dict[tuple[str, str], str] = {
    ("manifest", "version"): "Always 1.",
    ("manifest", "id"): "Your name for the computation; `manifest init --id`.",
    ("manifest", "name"): "A title shown to every party.",
    ("manifest", "algorithm"): "What runs; uploaded by its provider into slot `algorithm`.",
    ("manifest", "datasets"): "One upload slot each, named `name`.",
    ("manifest", "consumers"): "Parties the result (and the run log) is sealed to.",
    ("manifest", "log_readers"): "Also receive the sealed run log (e.g. the algorithm's author).",
    ("manifest", "policy"): (
        "The attestation policy every party checks the enclave against "
        "(`sealroom attest policy init` writes a commented one; `allow_simulated: true` "
        "is needed for SIMULATED evidence)."
    ),
    ("manifest", "limits"): "What the run may use; `manifest init --vcpus ...`.",
    ("algorithm", "provider"): "The party that uploads the algorithm (its public keys).",
    ("dataset", "provider"): "The party that uploads this dataset (its public keys).",
    ("source", "kbs"): "The key broker source.",
    ("algorithm", "kind"): "How it runs: a Python file or package, a WASI module, a binary.",
    ("algorithm", "sha256"): (
        "SHA-256 (lowercase hex) of what `upload` sends: the file, or a directory's "
        "deterministic tar (`sealroom checksum PATH`)."
    ),
    ("algorithm", "entrypoint"): "python: the file to run (inside the archive for a package).",
    ("algorithm", "args"): "Command-line arguments of the run.",
    ("algorithm", "archive"): "`tar` (or `zip`): unpacked into /algorithm before the run.",
    ("algorithm", "max_size"): "Largest upload accepted, bytes.",
    ("dataset", "name"): "The slot, and the path /inputs/NAME the algorithm reads.",
    ("dataset", "sha256"): "As for the algorithm: the hash of exactly what is uploaded.",
    ("dataset", "max_size"): "Largest upload accepted, bytes.",
    ("dataset", "archive"): "`tar`/`zip`: unpacked into the directory /inputs/NAME.",
    ("dataset", "source"): "Filled by the enclave itself from a key broker (docs/adr/0027).",
    ("party", "name"): "Your label for the party in this manifest.",
    ("party", "ed25519"): "Signing key (hex): uploads and result requests are signed with it.",
    ("party", "x25519"): "Receiving key (hex): results and logs are sealed to it.",
    ("limits", "vcpus"): "vCPUs of the run.",
    ("limits", "memory_mb"): "Memory of the run, MiB.",
    ("limits", "wall_seconds"): "Wall-clock limit; the run is stopped and fails past it.",
    ("limits", "max_result_bytes"): "Largest results archive; a larger one fails the run.",
    ("kbs-source", "url"): "The key broker the enclave attests to.",
    ("kbs-source", "resource"): "The key's resource path at the broker.",
    ("kbs-source", "ciphertext"): "Where the provider-encrypted data is fetched from.",
    ("service", "name"): "The service's name.",
    ("service", "kind"): "How `command` runs (oci: a locally available image, `image`).",
    ("service", "command"): "argv of the workload.",
    ("service", "port"): "Where the workload listens inside the enclave.",
    ("service", "env"): "Environment (names reserved for the sandbox are refused).",
    ("service", "files"): "Files mounted read-only at /algorithm/PATH.",
    ("service", "egress"): "Hosts the workload may connect to; empty: no network out.",
    ("service", "restart"): "What happens when the workload stops.",
}

_NAMES = {
    "_ManifestModel": "manifest",
    "_AlgorithmModel": "algorithm",
    "_DatasetModel": "dataset",
    "_PartyModel": "party",
    "Limits": "limits",
    "_SourceModel": "source",
    "_KbsSourceModel": "kbs-source",
    "ServiceSpec": "service",
    "SpecFile": "file",
    "Resources": "resources",
    "RestartPolicy": "restart",
}


def _name(ref_or_title: str) -> str:
    key = ref_or_title.rsplit("/", 1)[-1]
    return _NAMES.get(key, key)


def _type(p: dict[str, Any]) -> str:
    if "$ref" in p:
        n = _name(p["$ref"])
        return f"[{n}](#{n})"
    if "const" in p:
        return f"`{json.dumps(p['const'])}`"
    if "enum" in p:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in p["enum"])
    if "anyOf" in p:
        return " or ".join(_type(x) for x in p["anyOf"])
    t = p.get("type", "any")
    if t == "array":
        return f"list of {_type(p.get('items', {}))}"
    if t == "object" and isinstance(p.get("additionalProperties"), dict):
        return f"map of string to {_type(p['additionalProperties'])}"
    return str({"integer": "integer", "string": "string", "boolean": "boolean"}.get(t, t))


def _limits(p: dict[str, Any]) -> str:
    out = []
    for k, label in (
        ("minimum", ">= {}"),
        ("exclusiveMinimum", "> {}"),
        ("maximum", "<= {}"),
        ("minLength", "length >= {}"),
        ("maxLength", "length <= {}"),
        ("minItems", ">= {} items"),
        ("maxItems", "<= {} items"),
        ("pattern", "matches `{}`"),
    ):
        if k in p:
            out.append(label.format(p[k]))
    return ", ".join(out)


def _section(name: str, s: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if s.get("description") and not s["description"].startswith("Resource limits of the run. A"):
        lines += [" ".join(s["description"].split()), ""]
    lines += ["| field | type | required / default | limits | meaning |", "|---|---|---|---|---|"]
    required = set(s.get("required", ()))
    for field, p in s.get("properties", {}).items():
        need = (
            "required"
            if field in required
            else ("default " + f"`{json.dumps(p['default'])}`" if "default" in p else "optional")
        )
        note = NOTES.get((name, field), "")
        lines.append(f"| `{field}` | {_type(p)} | {need} | {_limits(p)} | {note} |")
    return [*lines, ""]


def _document(title: str, model: type[BaseModel], intro: str) -> list[str]:
    schema = model.model_json_schema()
    root = _name(model.__name__)
    out = [f"## {title}", "", intro, "", *_section(root, schema)]
    for key, sub in schema.get("$defs", {}).items():
        out += _section(_name(key), sub)
    return out


def sections() -> dict[str, set[str]]:
    """Every (section, fields) the page documents: what NOTES may name."""
    got: dict[str, set[str]] = {}
    for model in (_ManifestModel, ServiceSpec):
        schema = model.model_json_schema()
        got[_name(model.__name__)] = set(schema.get("properties", {}))
        for key, sub in schema.get("$defs", {}).items():
            got.setdefault(_name(key), set()).update(sub.get("properties", {}))
    return got


def render() -> str:
    out = [
        "# File formats (reference)",
        "",
        "Generated from the models that parse these files (`python -m "
        "sealroom.cli.reference > docs/reference.md`); do not edit by hand.",
        "",
        *_document(
            "Computation manifest",
            _ManifestModel,
            "A JSON object every party signs by its hash (`sealroom manifest hash`): the "
            "RFC 8785 canonical form of the object as written, so every value counts and "
            "no field may be added (unknown fields are refused). Start from `sealroom "
            "manifest init`; check with `sealroom manifest validate`. Hex values are "
            "lowercase.",
        ),
        *_document(
            "Service spec",
            ServiceSpec,
            "A long-running workload in an attested enclave (`sealroom service`). JSON; "
            "unknown fields are refused.",
        ),
    ]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
