"""Shared CLI helpers: paths, input parsing, rendering. No business logic here."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from sealroom import paths
from sealroom.attestation.appraise import FRESH_NOT_CHECKED, AppraisalResult
from sealroom.attestation.claims import Claims
from sealroom.errors import InvalidInputError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

SIMULATED_BANNER = (
    "SIMULATED TEE: this evidence was signed by the local sealroom sim authority, not by "
    "TEE hardware. It proves the pipeline works and NOTHING about confidentiality."
)


def home_dir() -> Path:
    """sealroom's state directory: $SEALROOM_HOME or ~/.local/share/sealroom."""
    return paths.home()


def read_input(path: str, what: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise InvalidInputError(f"cannot read {what} {path}: {e.strerror}") from e


def parse_now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise InvalidInputError(f"--now is not an ISO 8601 time: {text!r}") from e
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse_hex(text: str | None, what: str, size: int | None = None) -> bytes | None:
    if text is None:
        return None
    try:
        value = bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError as e:
        raise InvalidInputError(f"{what} is not hex: {text!r}") from e
    if size is not None and len(value) != size:
        raise InvalidInputError(f"{what} must be {size} bytes, got {len(value)}")
    return value


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def simulated_banner() -> None:
    console.print(
        Panel(
            f"[bold yellow]{SIMULATED_BANNER}[/]",
            title="[bold red]SIMULATED[/]",
            border_style="red",
        )
    )


def _claim_rows(d: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not {"raw"} >= set(v):
            if "raw" in v and all(not isinstance(x, dict) for x in v.values()):
                inner = " ".join(
                    f"{ik}={iv}" for ik, iv in v.items() if ik != "raw" and iv is not None
                )
                rows.append(
                    (key, f"{inner}  (raw {v['raw']:#x})" if isinstance(v["raw"], int) else inner)
                )
            else:
                rows.extend(_claim_rows(v, key + "."))
        else:
            rows.append((key, "" if v is None else str(v)))
    return rows


def render_claims(name: str, claims: Claims) -> None:
    if claims.simulated:
        simulated_banner()
    state = "verified" if claims.verified else "NOT verified (inspect only)"
    table = Table(title=f"{name}: {claims.kind} claims, {state}", show_lines=False)
    table.add_column("claim", style="cyan", no_wrap=True)
    table.add_column("value", overflow="fold")
    for k, v in _claim_rows(claims.to_dict()):
        table.add_row(escape(k), escape(v))
    console.print(table)


def render_result(result: AppraisalResult) -> None:
    if any(s.claims.simulated for s in result.submods):
        simulated_banner()
    table = Table(title=f"appraisal under policy {result.policy_id!r}")
    table.add_column("submod")
    table.add_column("rule", style="cyan")
    table.add_column("got", overflow="fold")
    table.add_column("want", overflow="fold")
    table.add_column("")
    for r in result.all_rules():
        mark = "[green]pass[/]" if r.passed else "[bold red]FAIL[/]"
        # Values quote evidence: escape them, or rich would read "[...]" as markup.
        table.add_row(
            escape(r.submod or "(bundle)"), escape(r.field), escape(r.got), escape(r.want), mark
        )
    console.print(table)
    for s in result.submods:
        if s.freshness == FRESH_NOT_CHECKED:
            console.print(
                f"[bold yellow]freshness NOT checked[/] for {escape(s.name)}: no nonce was "
                "bound (pass --nonce, with a policy that binds it, for fresh evidence)"
            )
    sim = " (SIMULATED)" if any(s.claims.simulated for s in result.submods) else ""
    if result.ok:
        console.print(f"[bold green]ACCEPTED{sim}[/]: authentic, and every rule passed")
    else:
        console.print(f"[bold red]REJECTED{sim}[/]: {len(result.failures())} rule(s) failed")


def render_run_log(log: Any, *, to_stderr: bool = False) -> None:
    """A decrypted run log (client.enclave.RunLog): the algorithm's output as it printed
    it (stderr in red), then the detailed reason. Text, never markup: it is the
    algorithm's."""
    out = err_console if to_stderr else console
    state = "completed" if log.ok else "FAILED"
    cut = ", output truncated" if log.truncated else ""
    out.print(f"--- run log (sealed to you; run {state}{cut}) ---", style="bold")
    for stream, text in log.entries:
        style = {"stderr": "red", "sealroom": "bold yellow"}.get(stream)
        out.print(text, end="", style=style, markup=False, highlight=False, soft_wrap=True)
    if log.entries and not log.entries[-1][1].endswith("\n"):
        out.print()
    out.print(f"--- end of run log; detail: {log.detail or log.reason} ---", markup=False)
