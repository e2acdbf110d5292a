"""The layers stay one-way (style.md): checked by walking every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sealroom"
WEB_DB = ("fastapi", "starlette", "sqlalchemy", "alembic", "psycopg", "asyncpg", "uvicorn")

# package -> prefixes it must never import
FORBIDDEN = {
    "attestation": (
        *WEB_DB,
        "sealroom.cli",
        "sealroom.controlplane",
        "sealroom.hostagent",
        "sealroom.runtime",
        "sealroom.client",
        "sealroom.collateral_online",
        "sealroom.testing",
        "httpx",
        "requests",
    ),
    "crypto": (
        *WEB_DB,
        "sealroom.cli",
        "sealroom.controlplane",
        "sealroom.hostagent",
        "sealroom.runtime",
        "sealroom.testing",
    ),
    "tee": (
        *WEB_DB,
        "sealroom.cli",
        "sealroom.controlplane",
        "sealroom.hostagent",
        "sealroom.runtime",
        "sealroom.testing",
    ),
    "protocol": (
        *WEB_DB,
        "sealroom.cli",
        "sealroom.controlplane",
        "sealroom.hostagent",
        "sealroom.runtime",
        "sealroom.client",
        "sealroom.tee",
        "sealroom.testing",
        "httpx",
        "requests",
    ),
    "runtime": (
        *WEB_DB,
        "sealroom.cli",
        "sealroom.controlplane",
        "sealroom.hostagent",
        "sealroom.client",
        "sealroom.collateral_online",
        "sealroom.testing",
    ),
    "hostagent": ("sealroom.cli", "sealroom.testing"),
    "controlplane": ("sealroom.cli", "sealroom.testing"),
    # the guest image: built from packages and measured; runs nothing of the host's
    "image": (
        *WEB_DB,
        "sealroom.cli",
        "sealroom.controlplane",
        "sealroom.hostagent",
        "sealroom.runtime",
        "sealroom.testing",
        "httpx",
    ),
    "client": ("sealroom.cli", "sealroom.testing"),
    # Online collateral (ADR 0023): HTTP lives here, above attestation; it serves verifiers
    # and knows nothing of the services that use it.
    "collateral_online": (
        *WEB_DB,
        "sealroom.cli",
        "sealroom.controlplane",
        "sealroom.hostagent",
        "sealroom.runtime",
        "sealroom.client",
        "sealroom.testing",
    ),
    # the transparency log's pure part (ADR 0030): hashing, proofs, notes; no HTTP, no DB
    "tlog": (
        *WEB_DB,
        "sealroom.cli",
        "sealroom.controlplane",
        "sealroom.hostagent",
        "sealroom.runtime",
        "sealroom.client",
        "sealroom.testing",
        "httpx",
        "requests",
    ),
    # Federation (ADR 0028): a library above attestation and tee; adapters live above it.
    "federation": (
        *WEB_DB,
        "sealroom.cli",
        "sealroom.controlplane",
        "sealroom.hostagent",
        "sealroom.runtime",
        "sealroom.client",
        "sealroom.integrations",
        "sealroom.testing",
        "nvflare",
        "httpx",
        "requests",
    ),
    "integrations": (
        *WEB_DB,
        "sealroom.cli",
        "sealroom.controlplane",
        "sealroom.hostagent",
        "sealroom.runtime",
        "sealroom.testing",
    ),
    "errors.py": ("sealroom.attestation.kinds", *WEB_DB),
    # the key broker (ADR 0024): below the control plane and the CLI
    "kbs": (
        "sealroom.cli",
        "sealroom.controlplane",
        "sealroom.hostagent",
        "sealroom.runtime",
        "sealroom.client",
    ),
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _modules() -> list[tuple[str, Path]]:
    out = []
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC)
        out.append((rel.parts[0], p))
    return out


@pytest.mark.parametrize(("top", "path"), _modules(), ids=lambda x: str(x))
def test_module_respects_layers(top: str, path: Path) -> None:
    banned = FORBIDDEN.get(top, ())
    if top != "testing":
        banned = (*banned, "sealroom.testing")
    if top != "cli":
        banned = (*banned, "sealroom.cli")  # nothing imports the CLI
    bad = [m for m in _imports(path) if any(m == b or m.startswith(b + ".") for b in banned)]
    assert not bad, f"{path.relative_to(SRC)} imports {bad}, which its layer must not"


def test_layering_check_can_fail(tmp_path: Path) -> None:
    p = tmp_path / "m.py"
    p.write_text("import sqlalchemy\nfrom sealroom.cli import main\n")
    assert _imports(p) == ["sqlalchemy", "sealroom.cli"]


RUNTIME_ALLOWED = (
    "sealroom.runtime",
    "sealroom.crypto",
    "sealroom.attestation",
    "sealroom.tee",
    "sealroom.errors",
    "sealroom.files",  # bottom layer: standard library + errors (private writes, wipe_tree)
    "sealroom.manifest",
    "sealroom.protocol",
    # the guest side of the key broker protocol (ADR 0024): no web framework, no DB
    "sealroom.kbs.client",
    "sealroom.kbs.protocol",
    "sealroom.kbs.jwe",
)
PROTOCOL_ALLOWED = (
    "sealroom.protocol",
    "sealroom.errors",
    "sealroom.crypto",
    "sealroom.attestation",
)


@pytest.mark.parametrize("path", sorted((SRC / "runtime").rglob("*.py")), ids=str)
def test_trusted_runtime_imports_only_its_allow_list(path: Path) -> None:
    """The in-enclave runtime is the trusted base: besides the standard library and a few
    libraries, it may use only these sealroom packages (design.md, style.md)."""
    own = [m for m in _imports(path) if m == "sealroom" or m.startswith("sealroom.")]
    bad = [m for m in own if not any(m == a or m.startswith(a + ".") for a in RUNTIME_ALLOWED)]
    assert not bad, f"{path.relative_to(SRC)} imports {bad}"


@pytest.mark.parametrize("path", sorted((SRC / "protocol").rglob("*.py")), ids=str)
def test_protocol_is_a_bottom_layer(path: Path) -> None:
    """The cross-process contracts (ADR 0015) sit below everything that speaks them: they
    may use only errors, crypto and attestation, so the trusted runtime can import them."""
    own = [m for m in _imports(path) if m == "sealroom" or m.startswith("sealroom.")]
    bad = [m for m in own if not any(m == a or m.startswith(a + ".") for a in PROTOCOL_ALLOWED)]
    assert not bad, f"{path.relative_to(SRC)} imports {bad}"


KBS_GUEST_SIDE = ("client.py", "protocol.py", "jwe.py", "seams.py")
KBS_GUEST_ALLOWED = (
    "sealroom.kbs.protocol",
    "sealroom.kbs.jwe",
    "sealroom.kbs.seams",
    "sealroom.errors",
    "sealroom.attestation",
    "sealroom.crypto",
)


@pytest.mark.parametrize("name", KBS_GUEST_SIDE)
def test_kbs_guest_side_imports_no_web_framework_or_database(name: str) -> None:
    """The enclave runtime imports the KBS client: it and what it imports stay free of web
    frameworks and databases (ADR 0024)."""
    path = SRC / "kbs" / name
    mods = _imports(path)
    web = [m for m in mods if any(m == b or m.startswith(b + ".") for b in WEB_DB)]
    own = [m for m in mods if m.startswith("sealroom.")]
    bad = [m for m in own if not any(m == a or m.startswith(a + ".") for a in KBS_GUEST_ALLOWED)]
    assert not web and not bad, f"kbs/{name} imports {web + bad}"
