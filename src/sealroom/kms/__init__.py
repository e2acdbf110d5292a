"""sealroom's key manager (beyond Trustee): versioned keys wrapped under a KEK held by a
pluggable backend (file or PKCS#11), a hash-chained audit trail, and lockdown.

No HTTP here: the key broker (``sealroom.kbs``) and the CLI call into it. See ADR 0026
(key hierarchy, KEK backends, audit chain) and ADR 0027 (lockdown).
"""

from sealroom.kms.audit import AuditLog, verify_log
from sealroom.kms.kek import FileKekBackend, KekBackend, Pkcs11Config, Pkcs11KekBackend
from sealroom.kms.lockdown import LockdownGuard, Lockdowns, Scope
from sealroom.kms.release import release
from sealroom.kms.store import KeyManager

__all__ = [
    "AuditLog",
    "FileKekBackend",
    "KekBackend",
    "KeyManager",
    "LockdownGuard",
    "Lockdowns",
    "Pkcs11Config",
    "Pkcs11KekBackend",
    "Scope",
    "release",
    "verify_log",
]
