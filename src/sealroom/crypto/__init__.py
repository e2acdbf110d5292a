"""sealroom's cryptographic building blocks: canonical JSON, party identities, signed
documents, and results sealed to a consumer (HPKE + a chunked AEAD stream).

Every primitive comes from pyca/cryptography (directly or through pyhpke); nothing here
implements a primitive. See docs/adr/0009-sealing-and-manifest.md.
"""
