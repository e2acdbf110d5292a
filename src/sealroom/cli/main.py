"""The `sealroom` command. Errors become messages and exit codes here, and only here.

Exit codes: 0 ok, 1 bad input, 2 not authentic, 3 unavailable, 4 policy violation,
5 the computation ran and failed (`sealroom result` shows its sealed log first).
"""

from __future__ import annotations

import json
import logging
import sys

import typer
from rich.text import Text

from sealroom import __version__
from sealroom.cli.account_cmd import account_app
from sealroom.cli.agent_cmd import agent_app
from sealroom.cli.attest_cmd import attest_app
from sealroom.cli.common import err_console
from sealroom.cli.controlplane_cmd import controlplane_app
from sealroom.cli.cp_cmd import computation_app, down_cmd, host_app, login_cmd, up_cmd
from sealroom.cli.data_cmd import data_app
from sealroom.cli.demo import demo_cmd
from sealroom.cli.ear_cmd import ear_app
from sealroom.cli.enclave_cmd import enclave_app, log_cmd, receipt_app, result_cmd, upload_cmd
from sealroom.cli.federation_cmd import federation_app
from sealroom.cli.keys_cmd import keys_app
from sealroom.cli.kms_cmd import kms_app
from sealroom.cli.manifest_cmd import manifest_app
from sealroom.cli.model_cmd import model_app
from sealroom.cli.service_cmd import service_app
from sealroom.cli.sim_cmd import sim_app
from sealroom.cli.tlog_cmd import log_app
from sealroom.errors import SealroomError

app = typer.Typer(
    name="sealroom",
    help="Confidential computing you can check for yourself.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(attest_app, name="attest")
app.add_typer(ear_app, name="ear")
app.add_typer(sim_app, name="sim")
app.add_typer(keys_app, name="keys")
app.add_typer(kms_app, name="kms")
app.add_typer(data_app, name="data")
app.add_typer(manifest_app, name="manifest")
app.add_typer(enclave_app, name="enclave")
app.add_typer(receipt_app, name="receipt")
app.add_typer(computation_app, name="computation")
app.add_typer(host_app, name="host")
app.add_typer(account_app, name="account")
app.add_typer(controlplane_app, name="controlplane")
app.add_typer(agent_app, name="agent")
app.add_typer(federation_app, name="federation")
app.add_typer(service_app, name="service")
app.add_typer(model_app, name="model")
app.command("demo")(demo_cmd)
app.command("upload")(upload_cmd)
app.command("result")(result_cmd)
# the sealed run log of a computation (was `sealroom log`; `log` is the transparency log)
app.command("run-log")(log_cmd)
app.add_typer(log_app, name="log")
app.command("up")(up_cmd)
app.command("down")(down_cmd)
app.command("login")(login_cmd)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sealroom {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """Confidential computing you can check for yourself."""


@app.command("version")
def version_cmd() -> None:
    """Print the sealroom version."""
    typer.echo(f"sealroom {__version__}")


def run(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="sealroom: %(levelname)s: %(message)s")
    try:
        app(args=argv, prog_name="sealroom")
    except SealroomError as e:
        if "--json" in (sys.argv[1:] if argv is None else argv):
            # asked for machine-readable output: the error is machine-readable too (stderr,
            # so stdout holds only a command's own document)
            doc: dict[str, object] = {
                "error": e.code,
                "message": e.message,
                "exit_code": e.exit_code,
            }
            extra = e.diagnostics().splitlines()[1:]
            if extra:  # e.g. each failed policy rule: the JSON form says what the text form says
                doc["details"] = [line.strip().removeprefix("- ") for line in extra]
            print(json.dumps(doc), file=sys.stderr, flush=True)
            return e.exit_code
        # Text, not markup: messages quote evidence and must never be interpreted.
        err_console.print(
            Text.assemble(("error", "bold red"), f" [{e.code}]: {e.diagnostics()}"),
            soft_wrap=True,
        )
        return e.exit_code
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        # The CLI framework exits 2 on usage errors; sealroom reserves 2 for "not authentic",
        # and sealroom's own commands never exit 2 this way, so a 2 here is bad input.
        return 1 if code == 2 else code
    return 0


def main() -> None:  # console-script entry point
    sys.exit(run())


if __name__ == "__main__":
    main()
