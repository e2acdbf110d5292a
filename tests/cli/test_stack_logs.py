"""`sealroom logs` (issue 15): the operator reads the stack's process logs; `-f` follows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_logs_follow_prints_lines_as_they_are_written(tmp_path: Path, env: dict[str, str]) -> None:
    """`sealroom logs -f` shows a line the control plane writes after it started (and a
    half-written line only once it is complete)."""
    import logging

    from sealroom.controlplane.logs import JsonFormatter

    logs = tmp_path / "stack" / "logs"
    logs.mkdir(parents=True)
    fmt = JsonFormatter()

    def record(msg: str, cid: str) -> str:
        rec = logging.makeLogRecord({"name": "sealroom.cp", "msg": msg, "levelno": 20})
        rec.levelname = "INFO"
        rec.computation_id = cid
        return fmt.format(rec) + "\n"

    cp_log = logs / "controlplane.log"
    cp_log.write_text(record("computation state", "c_old"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealroom.cli.main", "logs", "controlplane", "-f", "--json",
         "--data-dir", str(tmp_path / "stack")],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["computation_id"] == "c_old"
        line = record("computation state", "c_new")
        with cp_log.open("a") as f:
            f.write(line[:10])
            f.flush()
            f.write(line[10:])
        got = json.loads(proc.stdout.readline())
        assert (got["component"], got["computation_id"]) == ("controlplane", "c_new")
    finally:
        proc.terminate()
        proc.wait(30)
