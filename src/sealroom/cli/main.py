"""The `sealroom` command. Errors become messages and exit codes here, and only here.

Exit codes: 0 ok, 1 bad input, 2 not authentic, 3 unavailable, 4 policy violation,
5 the computation ran and failed (`sealroom result` shows its sealed log first).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import sys
from typing import Any

import typer
from rich.markup import escape
from rich.text import Text

from sealroom import __version__
from sealroom.cli.common import err_console
from sealroom.errors import SealroomError
from sealroom.extras import MissingExtraError, missing_extra

app = typer.Typer(
    name="sealroom",
    help="Confidential computing you can check for yourself.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Command groups by module. A group whose role's extra is not installed (ADR 0034: the core
# distribution is the enclave side only) stays listed and fails with the extra's name.
_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("attest", "sealroom.cli.attest_cmd", "attest_app"),
    ("ear", "sealroom.cli.ear_cmd", "ear_app"),
    ("sim", "sealroom.cli.sim_cmd", "sim_app"),
    ("keys", "sealroom.cli.keys_cmd", "keys_app"),
    ("kms", "sealroom.cli.kms_cmd", "kms_app"),
    ("data", "sealroom.cli.data_cmd", "data_app"),
    ("kbs", "sealroom.cli.kbs_cmd", "kbs_app"),
    ("manifest", "sealroom.cli.manifest_cmd", "manifest_app"),
    ("enclave", "sealroom.cli.enclave_cmd", "enclave_app"),
    ("receipt", "sealroom.cli.enclave_cmd", "receipt_app"),
    ("computation", "sealroom.cli.cp_cmd", "computation_app"),
    ("host", "sealroom.cli.cp_cmd", "host_app"),
    ("account", "sealroom.cli.account_cmd", "account_app"),
    ("controlplane", "sealroom.cli.controlplane_cmd", "controlplane_app"),
    ("agent", "sealroom.cli.agent_cmd", "agent_app"),
    ("federation", "sealroom.cli.federation_cmd", "federation_app"),
    ("service", "sealroom.cli.service_cmd", "service_app"),
    ("model", "sealroom.cli.model_cmd", "model_app"),
    ("log", "sealroom.cli.tlog_cmd", "log_app"),
    ("image", "sealroom.cli.image_cmd", "image_app"),
)
# Groups whose commands import their role's stack lazily: checked up front, so that even
# `--help` says which extra is missing instead of failing later in the middle of a command.
_ROLE_MODULES: dict[str, tuple[str, ...]] = {
    "controlplane": ("fastapi", "sqlalchemy", "uvicorn", "alembic"),
    "up": ("httpx", "fastapi", "sqlalchemy", "uvicorn", "alembic"),
}
# The extra to name where a role's is wider than the one module found missing.
_ROLE_EXTRA = {"agent": "agent", "up": "all", "down": "all"}
_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("demo", "sealroom.cli.demo", "demo_cmd"),
    ("upload", "sealroom.cli.enclave_cmd", "upload_cmd"),
    ("result", "sealroom.cli.enclave_cmd", "result_cmd"),
    # the sealed run log of a computation (was `sealroom log`; `log` is the transparency log)
    ("run-log", "sealroom.cli.enclave_cmd", "log_cmd"),
    ("up", "sealroom.cli.cp_cmd", "up_cmd"),
    ("down", "sealroom.cli.cp_cmd", "down_cmd"),
    ("login", "sealroom.cli.cp_cmd", "login_cmd"),
    ("logs", "sealroom.cli.cp_cmd", "logs_cmd"),
    ("checksum", "sealroom.cli.manifest_cmd", "checksum_cmd"),
)


def _unavailable(name: str, err: MissingExtraError) -> None:
    def stub(ctx: typer.Context) -> None:
        raise MissingExtraError(err.extra, err.module, f"'sealroom {name}'")

    app.command(
        name,
        help=escape(f"(needs: pip install 'sealroom[{err.extra}]')"),
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(stub)


def _load(module: str, attr: str, name: str) -> Any | None:
    try:
        for role_module in _ROLE_MODULES.get(name, ()):
            if importlib.util.find_spec(role_module) is None:
                raise ModuleNotFoundError(f"No module named {role_module!r}", name=role_module)
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as e:
        err = missing_extra(e)
        if err is None:
            raise
        _unavailable(name, MissingExtraError(_ROLE_EXTRA.get(name, err.extra), err.module))
        return None


for _name, _module, _attr in _GROUPS:
    _sub = _load(_module, _attr, _name)
    if _sub is not None:
        app.add_typer(_sub, name=_name)
for _name, _module, _attr in _COMMANDS:
    _cmd = _load(_module, _attr, _name)
    if _cmd is not None:
        app.command(_name)(_cmd)


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
        try:
            app(args=argv, prog_name="sealroom")
        except ModuleNotFoundError as e:
            # a command's lazy import of a role's module that this installation lacks
            err = missing_extra(e)
            if err is None:
                raise
            raise err from e
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
