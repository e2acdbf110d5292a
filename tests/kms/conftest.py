"""A throwaway SoftHSM2 token for the PKCS#11 KEK backend (Debian softhsm2, real library).

SOFTHSM2_CONF points at a config in the session's tmp directory; SoftHSM reads it when
the library is first initialised and sees only the tokens that exist then, so there is one
config and one token per test session (tests use distinct KEK labels). The user PIN is in
this process's environment only (softhsm2-util, short-lived, takes it on its argv once).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealroom.kms.kek import Pkcs11Config

SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
)


@pytest.fixture(scope="session")
def softhsm_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if shutil.which("softhsm2-util") is None:
        pytest.fail("softhsm2-util missing: scripts/bootstrap.sh installs Debian softhsm2")
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    yield root
    if old is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = old


@pytest.fixture(scope="session")
def softhsm_token(softhsm_dir: Path) -> Pkcs11Config:
    """The session's token (own label, random PIN in SEALROOM_KMS_PKCS11_PIN)."""
    module = next((m for m in SOFTHSM_MODULE_CANDIDATES if Path(m).exists()), None)
    assert module is not None, "libsofthsm2.so not found"
    label = f"t{secrets.token_hex(4)}"
    pin = secrets.token_hex(8)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            secrets.token_hex(8),
            "--pin",
            pin,
        ],
        check=True,
        capture_output=True,
        env={**os.environ},
    )
    os.environ["SEALROOM_KMS_PKCS11_PIN"] = pin
    return Pkcs11Config(module=module, token_label=label)
