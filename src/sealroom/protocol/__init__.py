"""Cross-process contracts, defined once (design.md, ADR 0015).

The runtime, the host agent, the control plane, the clients and the test fakes all speak
through these modules and define none of it themselves:

- ``lifecycle``: the computation states and which transitions are allowed (pure);
- ``enclave``: the enclave's HTTPS paths, headers, signed-message builders, public keys;
- ``enclave_api``: the enclave's HTTPS answers (attestation, status, events, challenge,
  upload), built by the runtime's server and parsed by the pinned enclave client;
- ``controlplane``: the control plane's headers, secret prefixes, result-request message;
- ``receipt``: building, signing and (offline) verifying run receipts.

A bottom layer: imports only ``errors``, ``crypto`` and ``attestation`` (no web framework,
no database, no HTTP client), so the trusted runtime may use it.
"""
