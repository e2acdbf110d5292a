"""The measured guest image ("the enclave OS", ADR 0034): its Python dependencies, build
and expected measurements."""
