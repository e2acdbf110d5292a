"""Adapters that let other systems use sealroom's verification (they import their host
system lazily; nothing else in sealroom imports them)."""
