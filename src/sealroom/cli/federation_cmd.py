"""`sealroom federation ...`: federated mutual attestation (issue 11, ADR 0028)."""

from __future__ import annotations

import typer
from rich.table import Table

from sealroom.cli.common import console, simulated_banner
from sealroom.errors import ConflictError

federation_app = typer.Typer(
    no_args_is_help=True, help="Federated mutual attestation (library demo; NVFlare plugin)."
)


@federation_app.command("demo")
def demo_cmd() -> None:
    """Three sites in SIMULATED enclaves, one with a wrong measurement: the others exclude it
    and run a federated averaging round among themselves."""
    from sealroom.federation.demo import run_demo

    simulated_banner()
    outcomes = run_demo()
    for out in outcomes:
        table = Table(
            title=f"{out.name}: its verdicts on its peers (its own policy) — SIMULATED",
            title_justify="left",
        )
        for col in ("peer", "verdict", "code", "detail"):
            table.add_column(col, overflow="fold")
        for v in out.verdicts:
            table.add_row(
                v.peer,
                "[green]accepted[/]" if v.accepted else "[bold red]EXCLUDED[/]",
                v.code,
                v.detail + (" (SIMULATED)" if v.simulated else ""),
            )
        console.print(table)
        console.print(f"  {out.name} runs measurement {out.measurement[:16]}...")
        if out.model is not None:
            console.print(
                f"  [bold]federated average[/] among {', '.join(out.participants)}: {out.model:.4f}"
            )
        else:
            console.print(f"  [yellow]no round for {out.name}[/]: {out.blocked}")
    done = [o for o in outcomes if o.model is not None]
    models = {round(o.model, 9) for o in done if o.model is not None}
    if len(done) < 2 or len(models) != 1:
        raise ConflictError(
            "the accepted sites did not complete one common round", code="federation-demo-failed"
        )
    console.print(
        f"[bold green]round complete[/]: {len(done)} sites agree on {models.pop():.4f}; "
        "the excluded site received no update. [bold red]SIMULATED[/]: proves the protocol, "
        "not confidentiality."
    )
