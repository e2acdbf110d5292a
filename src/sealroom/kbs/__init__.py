"""Key broker: Trustee's KBS protocol (RCAR 0.4.0) and the attestation service (ADR 0024).

``protocol`` (wire contract, shared by both sides), ``jwe`` (resource responses),
``client`` (the guest side; no web framework or database), ``seams`` (for the key
manager), ``server`` / ``attestation_service`` / ``store`` (the service side).
"""
