"""Federated mutual attestation: peers work only with peers whose evidence passes their own
policy (issue 11, ADR 0028).

- ``token``: the token format and its binding (REPORT_DATA = SHA-512 over the binding);
- ``site``: a site issues tokens from its TEE's evidence;
- ``verify``: a verifier checks a token with its own policy, roots, challenges, replay cache;
- ``core``: the pure state machine (events in, decisions out): admit, exclude, pause, stop,
  re-verify with jitter, minimum participants;
- ``demo``: an in-process adapter: three sim-TEE sites and a toy federated averaging round.

The NVFlare adapter is ``sealroom.integrations.nvflare``.
"""
