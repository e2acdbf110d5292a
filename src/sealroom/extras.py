"""Which optional extra of the distribution provides which third-party module.

The core distribution holds only what the enclave side needs (runtime, attestation,
protocol, the party's enclave client, the CLI around them; ADR 0034). The control plane,
the host agent and the HTTP clients come with extras. A command of a role whose extra is
not installed fails with :class:`MissingExtraError` naming the extra, never with a bare
``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

from sealroom.errors import UnavailableError

# top-level import name -> the extra that installs it
EXTRA_OF_MODULE: dict[str, str] = {
    "fastapi": "controlplane",
    "starlette": "controlplane",
    "uvicorn": "controlplane",
    "sqlalchemy": "controlplane",
    "alembic": "controlplane",
    "psycopg": "controlplane",
    "prometheus_client": "controlplane",
    "jinja2": "controlplane",
    "multipart": "controlplane",
    "python_multipart": "controlplane",
    "fastapi_offline": "controlplane",
    "pkcs11": "hsm",
    "sevsnpmeasure": "agent",
    "onnxruntime": "models",
    "onnx": "models",
    "numpy": "models",
    "nvflare": "nvflare",
}


class MissingExtraError(UnavailableError):
    """A command needs a part of sealroom that this installation does not hold."""

    code = "missing-extra"

    def __init__(self, extra: str, module: str, what: str | None = None) -> None:
        self.extra = extra
        self.module = module
        subject = what or "this command"
        super().__init__(
            f"{subject} needs the sealroom extra {extra!r} (module {module!r} is not "
            f"installed): pip install 'sealroom[{extra}]' (or 'sealroom[all]')"
        )


def missing_extra(exc: BaseException, what: str | None = None) -> MissingExtraError | None:
    """The :class:`MissingExtraError` for an import failure of an extra's module, else None
    (a missing module that no extra provides is a real bug and stays one)."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    return MissingExtraError(extra, top, what) if extra else None
