"""Getting an ACI into the store, verified: local files, URLs, appc names and stored image IDs.

Trust is rkt's, secure by default: an ACI runs only with a valid detached OpenPGP signature
(armored or binary) made by a key trusted for the image's **manifest name** (root.d plus the
prefix.d walk, see :mod:`keystore`), unless the task switched the ``image`` check off. The
signature is ``x.aci.asc`` next to a file or URL, or the discovered ``{ext}=aci.asc`` endpoint.

Nothing is fetched twice: a URL or appc name already stored is used from the store (its
signature, kept with it, is checked again against today's keys) unless ``force``; a local file
is read again only when it changed. Every check happens before anything is stored, so a refused
image leaves nothing behind.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nomad_rkt_driver.errors import InvalidArgument
from nomad_rkt_driver.images import gpg
from nomad_rkt_driver.images.aci import ACIInfo, StoredACI, find_by_image_id, ingest_aci, inspect_aci, stored
from nomad_rkt_driver.images.acifetch import SIGNATURE_MAX_BYTES, FetchNotFound, download
from nomad_rkt_driver.images.discovery import check_fetched, discover
from nomad_rkt_driver.images.platform import host_platform
from nomad_rkt_driver.images.reference import (
    ACIFileReference,
    ACIURLReference,
    AppcNameReference,
    ImageIDReference,
)
from nomad_rkt_driver.images.store import Store

log = logging.getLogger(__name__)

OPT_OUT: Final = 'insecure_options = ["image"]'
ACIReference = ACIFileReference | ACIURLReference | AppcNameReference | ImageIDReference


@dataclass(frozen=True)
class TrustedGPGKey:
    """An armored OpenPGP key trusted for some names, and where it came from (for messages)."""

    fingerprint: str
    armored: bytes
    source: str


KeysFor = Callable[[str], list[TrustedGPGKey]]


@dataclass(frozen=True)
class FetchPolicy:
    """What a task allows: skip signatures, skip TLS checks, plain-HTTP discovery; and limits."""

    verify_signature: bool = True
    tls_verify: bool | str = True
    allow_http: bool = False
    force: bool = False
    timeout_s: float = 300.0
    trust_prefix: str | None = None


@dataclass(frozen=True)
class FetchedACI:
    image: StoredACI
    signer: str | None  # "<fingerprint> (<key source>)" when verified


def name_under(name: str, prefix: str) -> bool:
    """Whether image name ``name`` lies under path prefix ``prefix`` (``a/b`` covers ``a/b/c``, not ``a/bc``)."""
    cleaned = prefix.strip("/")
    return name == cleaned or name.startswith(cleaned + "/")


class ACIPuller:
    """Fetches, verifies and stores ACIs; blocking, safe to use from several threads."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._stamps: dict[str, tuple[int, int, int]] = {}

    def fetch(self, ref: ACIReference, policy: FetchPolicy, keys_for: KeysFor) -> FetchedACI:
        """The stored, verified ACI for ``ref``; ``keys_for(name)`` gives the keys trusted for a name.

        Raises:
            gpg.SignatureError: unsigned, untrusted or tampered (rkt's wording and the fix).
            InvalidACI, InvalidACIManifest, UnsafeLayer…: a malformed or hostile ACI.
            FetchFailed, FetchNotFound, DiscoveryFailed: it could not be fetched.
            ImageIDNotFound: an image ID that is not stored.
        """
        return _Fetch(self, keys_for).run(ref, policy)


class _Fetch:
    """One fetch: the puller's store and file stamps, with the keys of this call."""

    def __init__(self, puller: ACIPuller, keys_for: KeysFor) -> None:
        self.store = puller.store
        self._stamps = puller._stamps
        self.keys_for = keys_for

    def run(self, ref: ACIReference, policy: FetchPolicy) -> FetchedACI:
        if not policy.verify_signature:
            log.warning("image %s: image signature verification has been disabled", ref)
        match ref:
            case ImageIDReference():
                candidates = find_by_image_id(self.store, ref.image_id)
                return self._verified_stored(candidates[0], ref, policy, None)
            case ACIFileReference():
                return self._file(ref, policy)
            case ACIURLReference():
                return self._remote(ref, ref.url, ref.signature_url, policy)
            case AppcNameReference():
                cached = None if policy.force else stored(self.store, str(ref))
                if cached is not None:
                    return self._verified_stored(cached, ref, policy, None)
                endpoints = discover(
                    ref, allow_http=policy.allow_http, verify=policy.tls_verify, timeout_s=policy.timeout_s
                )
                return self._remote(ref, endpoints.aci, endpoints.signature, policy, pubkeys=endpoints.pubkeys)

    # -- sources ---------------------------------------------------------------------------------

    def _file(self, ref: ACIFileReference, policy: FetchPolicy) -> FetchedACI:
        path = Path(ref.path)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise FetchNotFound(f"image {ref}: open {path}: no such file or directory") from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        signature = self._local_signature(ref, policy)
        name = str(ref)
        cached = stored(self.store, name)
        if cached is not None and not policy.force and self._stamps.get(name) == stamp:
            return self._verified_stored(cached, ref, policy, signature)
        info = inspect_aci(path, str(ref))
        self._check_name(ref, info, policy)
        signer = self._verify(ref, path, info.manifest.name, signature, policy)
        image = ingest_aci(self.store, path, info, name, source=str(path), signature=signature)
        self._stamps[name] = stamp
        return FetchedACI(image, signer)

    def _local_signature(self, ref: ACIFileReference, policy: FetchPolicy) -> bytes | None:
        if not policy.verify_signature:
            return None
        try:
            data = Path(ref.signature_path).read_bytes()
        except FileNotFoundError:
            raise gpg.SignatureError(
                f"image {ref}: error opening signature file: open {ref.signature_path}: no such file or "
                f"directory; sign the image (gpg --armor --detach-sign {ref.path}) and trust the key with "
                f"`nomad-rkt-driver trust add --prefix <image name> KEYFILE`, or run it unverified with {OPT_OUT}"
            ) from None
        if len(data) > SIGNATURE_MAX_BYTES:
            raise gpg.SignatureError(f"image {ref}: signature file {ref.signature_path} is larger than 1 MiB")
        return data

    def _remote(
        self,
        ref: ACIURLReference | AppcNameReference,
        url: str,
        signature_url: str,
        policy: FetchPolicy,
        pubkeys: tuple[str, ...] = (),
    ) -> FetchedACI:
        name = str(ref)
        cached = None if policy.force else stored(self.store, name)
        if cached is not None:
            return self._verified_stored(cached, ref, policy, None)
        scratch = Path(tempfile.mkdtemp(prefix="aci-", dir=self.store.root / "tmp"))
        try:
            archive = scratch / "image.aci"
            download(url, archive, what="the image", verify=policy.tls_verify, timeout_s=policy.timeout_s)
            signature = None
            if policy.verify_signature:
                sig_path = scratch / "image.aci.asc"
                download(
                    signature_url,
                    sig_path,
                    what="the signature file",
                    verify=policy.tls_verify,
                    timeout_s=policy.timeout_s,
                    limit=SIGNATURE_MAX_BYTES,
                )
                signature = sig_path.read_bytes()
            info = inspect_aci(archive, name)
            if isinstance(ref, AppcNameReference):
                problem = check_fetched(ref, info.manifest.name, info.manifest.labels)
                if problem:
                    raise InvalidArgument(
                        f"image {ref}: {problem} (fetched from {url}); fix the discovery templates or the "
                        "image's manifest, or ask for the name and labels the image has"
                    )
            self._check_name(ref, info, policy)
            signer = self._verify(ref, archive, info.manifest.name, signature, policy, pubkeys)
            image = ingest_aci(self.store, archive, info, name, source=url, signature=signature)
            return FetchedACI(image, signer)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _verified_stored(
        self, image: StoredACI, ref: ACIReference, policy: FetchPolicy, signature: bytes | None
    ) -> FetchedACI:
        """Use a stored ACI: check it again with ``signature`` (or the one stored with it)."""
        self._check_platform(ref, image.manifest.labels)
        self._check_prefix(ref, image.manifest.name, policy)
        sig = signature if signature is not None else image.signature
        if policy.verify_signature and sig is None and isinstance(ref, ACIURLReference | AppcNameReference):
            return self._remote_refetch(ref, image, policy)
        signer = self._verify(ref, image.archive, image.manifest.name, sig, policy)
        return FetchedACI(image, signer)

    def _remote_refetch(
        self, ref: ACIURLReference | AppcNameReference, image: StoredACI, policy: FetchPolicy
    ) -> FetchedACI:
        log.info("image %s: stored without a signature check; fetching it again to verify it", ref)
        url = ref.url if isinstance(ref, ACIURLReference) else image.source
        signature_url = ref.signature_url if isinstance(ref, ACIURLReference) else image.source + ".asc"
        if isinstance(ref, AppcNameReference):
            endpoints = discover(
                ref, allow_http=policy.allow_http, verify=policy.tls_verify, timeout_s=policy.timeout_s
            )
            url, signature_url = endpoints.aci, endpoints.signature
        forced = FetchPolicy(
            verify_signature=True,
            tls_verify=policy.tls_verify,
            allow_http=policy.allow_http,
            force=True,
            timeout_s=policy.timeout_s,
            trust_prefix=policy.trust_prefix,
        )
        return self._remote(ref, url, signature_url, forced)

    # -- checks ------------------------------------------------------------------------------

    def _check_name(self, ref: ACIReference, info: ACIInfo, policy: FetchPolicy) -> None:
        self._check_platform(ref, info.manifest.labels)
        self._check_prefix(ref, info.manifest.name, policy)

    @staticmethod
    def _check_platform(ref: ACIReference, labels: dict[str, str]) -> None:
        host = host_platform()
        os_name, arch = labels.get("os"), labels.get("arch")
        if (os_name is not None and os_name != host.os) or (arch is not None and arch != host.appc_arch):
            raise InvalidArgument(
                f"image {ref} is built for os={os_name} arch={arch}, but this host is os={host.os} "
                f"arch={host.appc_arch}; use an ACI built for this host"
            )

    @staticmethod
    def _check_prefix(ref: ACIReference, name: str, policy: FetchPolicy) -> None:
        if policy.trust_prefix and not name_under(name, policy.trust_prefix):
            raise gpg.SignatureError(
                f'image {ref} is named "{name}", which is not under trust_prefix "{policy.trust_prefix}"; '
                "run an image of that prefix or change trust_prefix"
            )

    def _verify(
        self,
        ref: ACIReference,
        archive: Path,
        name: str,
        signature: bytes | None,
        policy: FetchPolicy,
        pubkeys: tuple[str, ...] = (),
    ) -> str | None:
        if not policy.verify_signature:
            return None
        if signature is None:
            raise gpg.SignatureError(
                f"image {ref} ({name}) was stored without a signature; fetch it again with its signature "
                f"(force_pull = true) or run it unverified with {OPT_OUT}"
            )
        keys = self.keys_for(name)
        if not keys:
            hint = ""
            if pubkeys:
                hint = (
                    f"; its site offers signing keys at {', '.join(pubkeys)}: discovered keys are not trusted "
                    "automatically, check the fingerprint and add it"
                )
                log.info(
                    'To trust the key for "%s", run: nomad-rkt-driver trust add --prefix "%s" KEYFILE '
                    "(after checking its fingerprint); keys offered at %s",
                    name,
                    name,
                    ", ".join(pubkeys),
                )
            raise gpg.SignatureError(
                f'image {ref}: openpgp: signature made by unknown entity: no OpenPGP key is trusted for "{name}" '
                f"or any prefix of it{hint}; trust the signer's key with `nomad-rkt-driver trust add --prefix "
                f'"{name}" KEYFILE` (or a Vault trust block), or run it unverified with {OPT_OUT}'
            )
        fingerprint = gpg.verify_detached(archive, signature, [k.armored for k in keys], name)
        source = next((k.source for k in keys if k.fingerprint == fingerprint), "a trusted key")
        log.info("image %s: signature verified: %s (%s)", ref, fingerprint, source)
        return f"{fingerprint} ({source})"
