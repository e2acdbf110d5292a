"""Evidence providers: code that runs inside a guest and produces fresh evidence items.

Each provider talks to one TEE interface (a TPM through tpm2-tools, configfs-tsm, the sim
authority) and returns :class:`~sealroom.attestation.evidence.EvidenceItem` objects that the
attestation library verifies unchanged. Providers never verify their own evidence.
"""
