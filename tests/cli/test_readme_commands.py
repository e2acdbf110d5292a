"""Every `sealroom ...` command the README shows exists, with the options it is shown
with, and no required option missing (issue 15: the README must run as written). The
sections that run whole flows are executed by test_party_cli, test_stack_cli and
test_service_cli; this test catches a renamed command or option anywhere in the README."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from sealroom.cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[str]:
    text = README.read_text()
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("#"):
                continue
            # `(umask 077; sealroom ... > f)`, `for ...; do sealroom ...; done`
            for m in re.finditer(r"(?:^|[;(]\s*|do\s+)(sealroom\s[^;)]*)", line):
                out.append(m.group(1).strip())
    # commands quoted in the prose: `sealroom ...` (one line, no placeholder ellipsis)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`((?:\(umask 077; )?sealroom [^`]+)`", prose.replace("\n", " ")):
        span = re.sub(r"\s+", " ", span).removeprefix("(umask 077; ").rstrip(")")
        if "…" not in span:
            out.append(PROSE + span.split(" > ")[0].split(" < ")[0].strip())
    return out


#: Marks a command named in the prose: it must exist with the options shown, but may be
#: a reference by name (`sealroom result` prints ...) without the options it needs to run.
PROSE = "prose: "


def _resolve(words: list[str]) -> tuple[Any, list[str]]:
    """The command a line names (groups have ``commands``) and the words after it."""
    cmd: Any = typer.main.get_command(app)
    rest = list(words)
    while hasattr(cmd, "commands") and rest and not rest[0].startswith("-"):
        sub = cmd.commands.get(rest[0])
        assert sub is not None, f"no command {rest[0]!r} under {cmd.name!r}"
        cmd, rest = sub, rest[1:]
    return cmd, rest


COMMANDS = readme_commands()


def test_readme_has_commands() -> None:
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_exists_with_its_options(line: str) -> None:
    prose = line.startswith(PROSE)
    line = line.removeprefix(PROSE)
    words = shlex.split(line.replace("[", " ").replace("]", " "))
    words = [w for w in words if w not in ("<", ">", "|")]
    # a redirect's target is not an argument
    words = [w for i, w in enumerate(words) if i == 0 or words[i - 1] not in ("<", ">")]
    cmd, rest = _resolve(words[1:])
    if prose and hasattr(cmd, "commands"):  # a group named in a sentence
        assert all(w.startswith("-") for w in rest), line
        return
    assert not hasattr(cmd, "commands"), f"{line!r} names a group, not a command"
    known = {o for p in cmd.params for o in getattr(p, "opts", [])}
    known |= {o for p in cmd.params for o in getattr(p, "secondary_opts", [])}
    used = {w.split("=", 1)[0] for w in rest if w.startswith("-") and w != "-"}
    assert used <= known, f"{line!r}: unknown options {sorted(used - known)}"
    if prose and len(rest) == 0:  # a command referred to by its name
        return
    optional_group = "[" in line
    for p in cmd.params:
        if p.param_type_name == "option" and p.required and not optional_group:
            assert set(p.opts) & used, f"{line!r}: required option {p.opts[0]} missing"
