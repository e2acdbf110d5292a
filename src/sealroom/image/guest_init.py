"""PID 1 of the sealroom guest (ADR 0034): no shell, standard library only.

Copied into the initramfs as ``/init`` (with ``#!/usr/bin/python3.11 -I -S -B``); it
never imports sealroom or anything outside the standard library, so the initramfs holds
exactly Python, the modules listed by ``modulefinder`` for this file, and tpm2-tools.

What it does, in order: mount /proc, /sys, /dev, securityfs; say ``{"type": "ready"}`` on
the host channel (the second serial port, ``/dev/ttyS1``; one JSON object per line); then
answer requests until told to power off:

- ``{"op": "quote", "nonce": HEX, "pcrs": [..]}`` -> ``{"type": "evidence", "quote": B64,
  "signature": B64, "pcrs": B64, "eventlog": B64, "bank": "sha256", "indices": [..]}``:
  a TPM2_Quote by the attestation key the host provisioned at ``AK_HANDLE`` (the TPM signs;
  this program only relays bytes), with the verifier's nonce as qualifying data, plus the
  firmware's TCG event log from securityfs;
- ``{"op": "poweroff"}`` -> the machine powers off.

Anything unreadable is answered with ``{"type": "error", "message": ...}``; a failure of
PID 1 itself powers the machine off (a guest that cannot attest must not linger).
"""

import base64
import binascii
import ctypes
import json
import os
import subprocess
import sys
import tempfile
from typing import BinaryIO

AK_HANDLE = "0x81010002"
CHANNEL = "/dev/ttyS1"
EVENT_LOG = "/sys/kernel/security/tpm0/binary_bios_measurements"
TCTI = "device:/dev/tpmrm0"
MAX_NONCE = 64
# reboot(2): LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF
_REBOOT = (0xFEE1DEAD, 672274793, 0x4321FEDC)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: str, fstype: str) -> None:
    os.makedirs(target, exist_ok=True)
    if _libc().mount(source.encode(), target.encode(), fstype.encode(), 0, None) != 0:
        err = ctypes.get_errno()
        if err != 16:  # EBUSY: already mounted (devtmpfs with CONFIG_DEVTMPFS_MOUNT)
            raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def poweroff() -> None:
    os.sync()
    _libc().syscall(169, *_REBOOT)  # SYS_reboot on x86_64
    os._exit(0)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def quote(req: dict[str, object]) -> dict[str, object]:
    nonce = bytes.fromhex(str(req.get("nonce", "")))
    if not 0 < len(nonce) <= MAX_NONCE:
        raise ValueError(f"nonce must be 1..{MAX_NONCE} bytes, got {len(nonce)}")
    raw = req.get("pcrs", list(range(24)))
    if not isinstance(raw, list) or not raw:
        raise ValueError("pcrs must be a non-empty list of PCR indices")
    indices = sorted({int(i) for i in raw})
    if any(not 0 <= i <= 23 for i in indices):
        raise ValueError("PCR indices are 0..23")
    with tempfile.TemporaryDirectory() as work:
        proc = subprocess.run(  # noqa: S603 - a fixed tool
            [
                "/usr/bin/tpm2_quote", "-c", AK_HANDLE,
                "-l", "sha256:" + ",".join(map(str, indices)),
                "-q", nonce.hex(), "-g", "sha256", "--scheme", "rsassa",
                "-m", "q.msg", "-s", "q.sig", "-o", "q.pcrs", "-F", "values",
            ],
            cwd=work,
            env={"TPM2TOOLS_TCTI": TCTI, "PATH": "/usr/bin"},
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError("tpm2_quote failed: " + proc.stderr.strip()[-400:])
        out = {
            name: base64.b64encode(_read(os.path.join(work, f))).decode()
            for name, f in (("quote", "q.msg"), ("signature", "q.sig"), ("pcrs", "q.pcrs"))
        }
    try:
        out["eventlog"] = base64.b64encode(_read(EVENT_LOG)).decode()
    except OSError:
        out["eventlog"] = ""
    return {"type": "evidence", "bank": "sha256", "indices": indices, **out}


def serve(chan_in: BinaryIO, chan_out: BinaryIO) -> None:
    def send(obj: dict[str, object]) -> None:
        # a newline first: whatever the firmware left on the port ends its own line
        chan_out.write(b"\nsealroom1 " + json.dumps(obj, sort_keys=True).encode() + b"\n")
        chan_out.flush()

    try:
        uptime = _read("/proc/uptime").split()[0].decode()
    except OSError:
        uptime = ""
    send({"type": "ready", "uptime": uptime})
    buf = b""
    while True:
        chunk = os.read(chan_in.fileno(), 4096)
        if not chunk:
            return
        buf += chunk.replace(b"\r", b"")
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("a request is a JSON object")
                op = req.get("op")
                if op == "poweroff":
                    send({"type": "bye"})
                    return
                if op == "quote":
                    send(quote(req))
                else:
                    raise ValueError(f"unknown op {op!r}")
            except (ValueError, RuntimeError, OSError, binascii.Error) as e:
                send({"type": "error", "message": str(e)})


def main() -> None:
    mount("proc", "/proc", "proc")
    mount("sysfs", "/sys", "sysfs")
    mount("devtmpfs", "/dev", "devtmpfs")
    mount("securityfs", "/sys/kernel/security", "securityfs")
    mount("tmpfs", "/tmp", "tmpfs")  # noqa: S108 - the guest's own, empty tmpfs
    import termios
    import tty

    fd = os.open(CHANNEL, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[4] = attrs[5] = termios.B115200
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    with os.fdopen(fd, "r+b", buffering=0) as chan:
        serve(chan, chan)


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:  # PID 1 must not exit: report on the console, power off
        print(f"sealroom-init: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    poweroff()
