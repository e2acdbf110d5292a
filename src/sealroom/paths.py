"""Where sealroom keeps its state on this machine, resolved in one place (issue 9).

Everything lives under ``$SEALROOM_HOME`` (default ``~/.local/share/sealroom``, the XDG
data directory): party keys, the CLI's control-plane config, the host's sim authority,
the verifier's key and collateral memory, the local stack. Every module asks here; none
reads ``SEALROOM_HOME`` or expands ``~`` itself.

Bottom layer: standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "SEALROOM_HOME"


def home() -> Path:
    """``$SEALROOM_HOME``, else ``~/.local/share/sealroom`` (read at each call, so a
    process or test that sets the variable is followed)."""
    env = os.environ.get(ENV_HOME)
    return Path(env) if env else Path.home() / ".local" / "share" / "sealroom"


def keys_dir() -> Path:
    """Party keys, one 0600 file each."""
    return home() / "keys"


def cli_config() -> Path:
    """The CLI's control-plane URL and API key (0600)."""
    return home() / "config.json"


def sim_authority() -> Path:
    """The host's sim authority: the one SIMULATED root every local party verifies
    against (``sealroom enclave run``, ``sealroom sim``, the host agent, the control plane)."""
    return home() / "sim-authority"


def verifier_dir() -> Path:
    """The verifier's EAR signing key and its memory of collateral seen."""
    return home() / "verifier"


def collateral_cache() -> Path:
    """Online collateral (AMD KDS, Intel PCS) cached by the CLI."""
    return home() / "collateral"


def stack_dir() -> Path:
    """``sealroom up``'s control plane, agent and logs."""
    return home() / "stack"


def tpm2_state() -> Path:
    """State of the TPM2 evidence provider."""
    return home() / "tpm2"


def package_cache() -> Path:
    """Debian packages downloaded for guest images, kept between builds.

    A cache, not state: it follows ``$XDG_CACHE_HOME`` (default ``~/.cache``) rather than
    ``$SEALROOM_HOME``, so throw-away homes (tests, demos) share one download."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sealroom" / "debs"
