"""sealroom: confidential computing you can check for yourself."""

__version__ = "0.1.0"
