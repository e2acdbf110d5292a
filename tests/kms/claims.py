"""EAR claims shaped exactly as sealroom.attestation.ear.ear_claims writes them."""

from __future__ import annotations

from typing import Any


def snp_claims(
    *,
    measurement: str = "aa" * 48,
    chip_id: str = "cc" * 64,
    snp: int = 22,
    host_data: str = "00" * 32,
    kind: str = "snp",
) -> dict[str, Any]:
    return {
        "eat_profile": "tag:github.com,2023:veraison/ear",
        "iat": 1,
        "exp": 2,
        "submods": {
            "cpu": {
                "ear.status": "affirming",
                "sealroom.kind": kind,
                "sealroom.simulated": True,
                "sealroom.claims": {
                    "kind": kind,
                    "measurement": measurement,
                    "chip_id": chip_id,
                    "host_data": host_data,
                    "reported_tcb": {
                        "raw": 0,
                        "bootloader": 3,
                        "tee": 0,
                        "snp": snp,
                        "microcode": 115,
                        "fmc": None,
                    },
                },
            }
        },
    }


def tdx_claims(*, mr_td: str = "dd" * 48, svn: int = 5) -> dict[str, Any]:
    return {
        "submods": {
            "td": {
                "sealroom.kind": "tdx",
                "sealroom.claims": {
                    "kind": "tdx",
                    "mr_td": mr_td,
                    "tee_tcb_svn": f"{svn:02x}" + "00" * 15,
                },
            }
        }
    }
