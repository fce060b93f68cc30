"""Images without a daemon: references, registry client, content-addressed store, safe unpacking."""
