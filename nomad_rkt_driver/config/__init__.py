"""Plugin and task configuration, each declared once as a dataclass."""
