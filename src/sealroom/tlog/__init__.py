"""The sealroom transparency log, pure part: RFC 9162 Merkle hashing and proofs
(``merkle``), C2SP signed notes and checkpoints (``note``, ``checkpoint``), C2SP tlog-tiles
(``tiles``), C2SP tlog-proof (``proof``), and what sealroom logs (``entries``). No HTTP,
no database: the control plane stores the log (``sealroom.controlplane.services.tlog``) and
every verifier uses this package offline (docs/adr/0030)."""
