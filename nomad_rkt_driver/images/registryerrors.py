"""The errors of the registry client, one class per thing a caller may handle differently."""

from __future__ import annotations

from nomad_rkt_driver.errors import FailedPrecondition, InvalidArgument, NotFound


class RegistryUnavailable(FailedPrecondition):
    """The registry could not be reached or answered 5xx/429 after retries; trying later may work."""

    recoverable = True


class RegistryAuthFailed(FailedPrecondition):
    """The registry refused our credentials (401) or access (403)."""


class RegistryTLSError(FailedPrecondition):
    """TLS to the registry failed: unverifiable certificate, or a plain-HTTP registry asked over HTTPS."""


class ImageNotFound(NotFound):
    """The registry has no such manifest or blob (404)."""


class ManifestDigestMismatch(InvalidArgument):
    """The manifest bytes do not hash to the digest asked for or announced by the registry."""
