"""Entry point. Plugin mode must start fast (Nomad launches the plugin three times at boot), so
nothing heavy is imported before we know which mode we are in."""

from __future__ import annotations

import os
import sys

from nomad_rkt_driver.protocol import handshake


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        if not handshake.has_cookie(os.environ):
            sys.stderr.write(handshake.NOT_A_PROGRAM)
            sys.exit(1)
        from nomad_rkt_driver import hclog
        from nomad_rkt_driver.protocol.server import run

        hclog.setup()
        sys.exit(run())
    from nomad_rkt_driver.cli.commands import dispatch

    sys.exit(dispatch(args))
