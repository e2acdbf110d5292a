"""The README's "A long-running service" section, command by command, through the real
CLI in subprocesses (the spec and the commands are read from the README itself)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SEALROOM = [sys.executable, "-m", "sealroom.cli.main"]

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (Debian 'bubblewrap') is not installed"
)

APP = b"""\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = f"{os.environ['GREETING']} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def _section() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("## A long-running service", 1)[1].split("\n## ", 1)[0]


def test_readme_service_section(tmp_path: Path) -> None:
    section = _section()
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    spec_text = next(b for lang, b in blocks if lang == "yaml")
    commands = [
        ln.split("#", 1)[0].strip()
        for lang, b in blocks
        if lang == "sh"
        for ln in b.splitlines()
        if ln.strip()
    ]
    (tmp_path / "service.yaml").write_text(spec_text)
    (tmp_path / "app.py").write_bytes(APP)
    env = {**os.environ, "SEALROOM_HOME": str(tmp_path / "home")}

    def run(cmd: str) -> subprocess.CompletedProcess[str]:
        args = cmd.split()
        assert args[0] == "sealroom"
        return subprocess.run(
            [*SEALROOM, *args[1:]], cwd=tmp_path, env=env, text=True, capture_output=True,
            timeout=300, check=False,
        )  # fmt: skip

    run_cmd = next(c for c in commands if c.startswith("sealroom service run"))
    server = subprocess.Popen(
        [*SEALROOM, *run_cmd.split()[1:], "--json"],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        assert info["simulated"] is True
        outputs = {}
        for cmd in commands:
            if cmd == run_cmd:
                continue
            r = run(cmd.replace("URL", info["url"]))
            assert r.returncode == 0, (cmd, r.stdout, r.stderr)
            outputs[cmd.split()[2]] = r.stdout
        assert outputs["hash"].strip() == info["spec_hash"]
        assert "ACCEPTED" in outputs["verify"] and "SIMULATED" in outputs["verify"]
        assert outputs["curl"] == "world /path"
    finally:
        server.terminate()
        server.wait(60)
