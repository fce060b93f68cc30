"""Everything that runs the OCI runtime and the per-task monitor."""
