"""The control plane (untrusted by design): accounts, hosts, placement, computation
lifecycle, sealed-blob store. It schedules and relays; it never sees plaintext data and
cannot forge a receipt. ``create_app(settings)`` builds the FastAPI application."""
