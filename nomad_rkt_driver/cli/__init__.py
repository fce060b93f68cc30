"""The nomad-rkt-driver command: plugin mode (no arguments, launched by Nomad) and operator commands."""
