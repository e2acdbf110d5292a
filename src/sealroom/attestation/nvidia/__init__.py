"""NVIDIA H100 / NVSwitch SPDM evidence: parse (abi), verify, appraise (policy), kind."""
