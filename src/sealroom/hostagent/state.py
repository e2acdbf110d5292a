"""The agent's persisted state under DATA_DIR: its credential (agent.json, 0600) and the
enclaves it launched (state.json), so a restarted agent reuses its identity, re-adopts
live enclaves (or reports them lost) and never launches a computation twice."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sealroom.errors import InvalidInputError
from sealroom.files import write_private


@dataclass(frozen=True)
class Credential:
    control_plane: str
    host_id: str
    credential: str


@dataclass
class EnclaveRecord:
    """One launched enclave, as persisted."""

    computation_id: str
    manifest_hash: str
    dir: str
    socket: str
    outbox: str
    log: str
    pid: int = 0
    tee_pid: int = 0
    port: int = 0
    cpus: list[int] = field(default_factory=list)
    vcpus: int = 0
    memory_mb: int = 0
    wall_seconds: int = 0
    launched_at: float = 0.0  # time.time()
    listening_at: float = 0.0
    running_at: float = 0.0
    state: str = "launching"
    reason: str = ""
    events_sent: int = 0  # highest seq the control plane accepted
    uploaded: list[str] = field(default_factory=list)
    final_reported: bool = False
    reported_state: str = ""  # the last state the control plane accepted
    # entered states not yet accepted by the control plane, oldest first: [state, reason]
    unreported: list[list[str]] = field(default_factory=lambda: [["launching", ""]])
    stopped: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> EnclaveRecord:
        known = {k: v for k, v in obj.items() if k in cls.__dataclass_fields__}
        if known.get("state") in ("exited", "lost"):  # written before the one lifecycle
            known["state"] = "failed"
        return cls(**known)


class AgentStore:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.credential_path = data_dir / "agent.json"
        self.state_path = data_dir / "state.json"

    # ---- credential -----------------------------------------------------------------
    def load_credential(self) -> Credential | None:
        try:
            obj = json.loads(self.credential_path.read_text())
            return Credential(
                control_plane=str(obj["control_plane"]),
                host_id=str(obj["host_id"]),
                credential=str(obj["credential"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InvalidInputError(
                f"{self.credential_path} is unreadable ({e}); remove it to register again",
                code="agent-state-corrupt",
            ) from e

    def save_credential(self, cred: Credential) -> None:
        body = json.dumps(
            {
                "control_plane": cred.control_plane,
                "host_id": cred.host_id,
                "credential": cred.credential,
            },
            indent=2,
        ).encode()
        write_private(self.credential_path, body, overwrite=True, what="agent credential")

    # ---- enclaves ---------------------------------------------------------------------
    def load(self) -> tuple[dict[str, EnclaveRecord], set[str]]:
        """(enclaves by computation id, every computation id ever launched here)."""
        try:
            obj = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}, set()
        except (OSError, ValueError) as e:
            raise InvalidInputError(
                f"{self.state_path} is unreadable ({e})", code="agent-state-corrupt"
            ) from e
        records = {r["computation_id"]: EnclaveRecord.from_json(r) for r in obj.get("enclaves", [])}
        return records, set(obj.get("launched", [])) | set(records)

    def save(self, records: dict[str, EnclaveRecord], launched: set[str]) -> None:
        body = json.dumps(
            {
                "version": 1,
                "enclaves": [r.to_json() for r in records.values()],
                "launched": sorted(launched),
            },
            indent=2,
        ).encode()
        write_private(self.state_path, body, overwrite=True, what="agent state")
