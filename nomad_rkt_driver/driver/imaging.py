"""Getting a task's image into the store and ready for a pod: fetch, verify, unpack.

The policy is rkt's: images must be verified unless the task opts out with
``insecure_options = ["image"]``; plain-HTTP registries need ``http``; skipping TLS checks
needs ``tls``. Registry images are verified with cosign-style signatures (``sha256-<hex>.sig``
in the same repository) against the sigstore public keys the plugin's ``trust_dir`` trusts for
the image's name; the verified digest is then pulled, pinned, so a tag moved meanwhile cannot
slip in. OCI layouts and archives imported from disk carry no registry signatures: they are
refused without the ``image`` opt-out.

ACI images (local ``.aci`` files, ``https://…/x.aci`` URLs, appc names found by discovery and
stored ``sha512-…`` image IDs) are verified with detached OpenPGP signatures against the keys
trusted for the image's manifest name: the ``trust_dir`` keystore (root.d, prefix.d) and the
``trust { prefix vault_path }`` blocks whose Vault secret holds an armored OpenPGP key. The
task's ``trust_prefix``, when set, restricts the image names it may run (see docs/security.md).
TLS is verified against the system CAs plus the plugin's ``tls_ca_file``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.driver.insecure import expand
from nomad_rkt_driver.driver.secrets import VaultBackedTrust, registry_credentials, vault_for
from nomad_rkt_driver.errors import FailedPrecondition, InvalidArgument, InvalidConfig
from nomad_rkt_driver.images import gc, gpg
from nomad_rkt_driver.images.aci import ACI_MEDIA_TYPE
from nomad_rkt_driver.images.acifetch import tls_verify_setting
from nomad_rkt_driver.images.acipull import ACIPuller, FetchPolicy, TrustedGPGKey, name_under
from nomad_rkt_driver.images.imageconfig import ImageDefaults, image_defaults
from nomad_rkt_driver.images.keystore import Keystore
from nomad_rkt_driver.images.layout import import_image
from nomad_rkt_driver.images.pull import Puller, PullProgress
from nomad_rkt_driver.images.reference import (
    ACIFileReference,
    ACIURLReference,
    AppcNameReference,
    DockerArchiveReference,
    DockerReference,
    ImageIDReference,
    OCIArchiveReference,
    OCILayoutReference,
    parse_reference,
)
from nomad_rkt_driver.images.registry import RegistryClient
from nomad_rkt_driver.images.signatures import Evidence, Verified, verify_evidence, verify_image
from nomad_rkt_driver.images.sigstore import SignatureRefused
from nomad_rkt_driver.images.store import BlobNotFound, ImagePin, ImageRecord, Store
from nomad_rkt_driver.images.trust import SigstoreTrust, name_prefixes

log = logging.getLogger(__name__)
ProgressCallback = Callable[[PullProgress], None]


@dataclass(frozen=True)
class ReadyImage:
    """An image in the store with its layers unpacked, top layer first, and its pod defaults."""

    record: ImageRecord
    defaults: ImageDefaults
    lower_dirs: tuple[Path, ...]
    signer: str | None = None  # the trusted key file that verified the image; None when not verified
    pin: ImagePin | None = field(default=None, compare=False, repr=False)  # see Images.prepare

    def release(self) -> None:
        """Let the image be removed as unused again (once the task references it, or failed)."""
        if self.pin is not None:
            self.pin.release()


class Images:
    """The driver's access to the image store; blocking, called from worker threads."""

    def __init__(self, store: Store, puller: Puller, referenced: Callable[[], Collection[str]] = frozenset) -> None:
        self.store = store
        self.puller = puller
        self.referenced = referenced  # names of the images the caller's tasks use
        self.budget: int | None = None  # gc.image_store_max in bytes, from the last prepare's plugin config
        self._early = threading.local()  # a pin taken inside _prepare, per thread (prepare runs in many)
        self._within: tuple[tuple[int, ...], int] | None = None  # store generation and budget it fit
        self.aci = ACIPuller(store)
        # local images already imported by this process, with the source's (inode, size, mtime)
        self._imported: dict[str, tuple[tuple[int, int, int], ImageRecord]] = {}

    def prepare(
        self, task: TaskConfig, plugin: PluginConfig, where: str, progress: ProgressCallback | None = None
    ) -> ReadyImage:
        """Fetch (or import) the task's image, check the trust policy, unpack its layers; see :meth:`_prepare`.

        The result pins the image (no removal as unused, by any process) until its ``release()``: the
        caller releases it once its task references the image, or failed. The image counts as used
        now (for the disk budget's LRU order); with a budget, the store is brought within it.
        """
        self.budget = plugin.gc.image_store_max_bytes
        for attempt in (1, 2, 3):
            self._early.pin = None
            try:
                ready = self._prepare(task, plugin, where, progress)
            except BlobNotFound as exc:  # removed as unused between the fetch and the unpack
                self._take_early_pin(None)
                log.info("image %s: removed from the store while a task started (attempt %d)", task.image, attempt)
                missing = str(exc)
                continue
            except BaseException:
                self._take_early_pin(None)
                raise
            pin = self._take_early_pin(ready.record.name) or self.store.pin_image(ready.record.name)
            if self.store.lookup_image(ready.record.name) == ready.record and all(d.is_dir() for d in ready.lower_dirs):
                break
            pin.release()  # removed between the fetch and the pin: fetch it again
            log.info("image %s: removed from the store while a task started (attempt %d)", task.image, attempt)
            missing = f"image {ready.record.name} is not in the store"
        else:
            raise FailedPrecondition(
                f"{missing}: it keeps being removed while this task starts (is `image gc` running in a loop?)",
                recoverable=True,
            )
        try:
            self.store.touch_image(ready.record.name)
            self.enforce_budget()
        except BaseException:
            pin.release()
            raise
        return replace(ready, pin=pin)

    def _pin_early(self, name: str) -> None:
        """Pin image ``name`` before it is fetched, when its name is known up front (see prepare)."""
        self._early.pin = (name, self.store.pin_image(name))

    def _take_early_pin(self, name: str | None) -> ImagePin | None:
        """This thread's early pin if it is for image ``name``; released otherwise."""
        early: tuple[str, ImagePin] | None = self._early.pin
        self._early.pin = None
        if early is None:
            return None
        if early[0] == name:
            return early[1]
        early[1].release()
        return None

    def enforce_budget(self) -> gc.Removal | None:
        """Remove least recently used images no task uses until the store is within the budget.

        Does nothing (None) without a budget, while another pass (of any process) or a pull runs,
        or when no image or layer came or went since a pass found the store within this budget.
        """
        if self.budget is None:
            return None
        if self._within == (self.store.generation(), self.budget):
            return None
        result = gc.collect(self.store, budget=self.budget, referenced=self.referenced, wait=0)
        if result is not None and result.total_after <= self.budget:
            self._within = (self.store.generation(), self.budget)
        return result

    def _prepare(
        self, task: TaskConfig, plugin: PluginConfig, where: str, progress: ProgressCallback | None = None
    ) -> ReadyImage:
        """Fetch (or import) the task's image, check the trust policy, unpack its layers."""
        try:
            ref = parse_reference(task.image, plugin.default_image_transport)
        except InvalidArgument as exc:  # the parser names the text and the accepted forms
            raise InvalidConfig(where, "image", str(exc)) from exc
        off = expand(task.insecure_options)
        try:
            tls_verify = tls_verify_setting(plugin.tls_ca_file, "tls" in off, Path(plugin.data_dir) / "tls")
        except InvalidArgument as exc:
            raise InvalidConfig("plugin config", "tls_ca_file", exc.message) from exc
        signer = None
        if isinstance(ref, ACIFileReference | ACIURLReference | AppcNameReference | ImageIDReference):
            policy = FetchPolicy(
                verify_signature="image" not in off,
                tls_verify=tls_verify,
                allow_http="http" in off,
                force=task.force_pull,
                timeout_s=float(task.image_pull_timeout),
                trust_prefix=task.trust_prefix,
            )
            fetched = self.aci.fetch(ref, policy, lambda name: gpg_keys_for(name, plugin))
            layer = fetched.image.record.layers[0]
            rootfs = self.store.unpacked_layer(
                layer.digest, ACI_MEDIA_TYPE, diff_id=layer.diff_id, strip_prefix="rootfs/"
            )
            return ReadyImage(fetched.image.record, fetched.image.manifest.defaults(), (rootfs,), fetched.signer)
        if isinstance(ref, DockerReference):
            if task.trust_prefix and not name_under(ref.name, task.trust_prefix):
                raise InvalidConfig(
                    where,
                    "image",
                    f'{ref} is named "{ref.name}", which is not under trust_prefix "{task.trust_prefix}"; '
                    "run an image of that prefix or change trust_prefix",
                )
            record, signer = self._pull(ref, task, plugin, off, tls_verify, progress)
        elif isinstance(ref, OCILayoutReference | OCIArchiveReference | DockerArchiveReference):
            if "image" not in off:
                raise InvalidConfig(
                    where,
                    "image",
                    f"{ref} is imported from disk and has no registry signature to verify; push it to a "
                    'registry and sign it with cosign, or set insecure_options = ["image"]',
                )
            log.warning("image %s: image signature verification has been disabled", ref)
            self._pin_early(str(ref))
            record = self._import(ref)
        defaults = image_defaults(self.store.read_bytes(record.config_digest), record.config_digest)
        lower = [
            self.store.unpacked_layer(layer.digest, layer.media_type, diff_id=layer.diff_id) for layer in record.layers
        ]
        return ReadyImage(record, defaults, tuple(reversed(lower)), signer)

    def remove_unused(self, name: str) -> bool:
        """Remove image ``name`` unless it is in use (:meth:`Store.image_in_use`, any process)."""
        reason = self.store.remove_unused_image(name, self.referenced())
        if reason is None:
            self._imported.pop(name, None)
        return reason is None

    def _import(self, ref: OCILayoutReference | OCIArchiveReference | DockerArchiveReference) -> ImageRecord:
        """Import a local image, or reuse the record when the layout/archive has not changed since."""
        source = Path(ref.path) / "index.json" if isinstance(ref, OCILayoutReference) else Path(ref.path)
        try:
            st = source.stat()
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
        cached = self._imported.get(str(ref))
        if stamp is not None and cached is not None and cached[0] == stamp:
            record = self.store.lookup_image(str(ref))
            if record is not None and record.manifest_digest == cached[1].manifest_digest:
                return record
        record = import_image(self.store, ref)
        if stamp is not None:
            self._imported[str(ref)] = (stamp, record)
        return record

    def _pull(
        self,
        ref: DockerReference,
        task: TaskConfig,
        plugin: PluginConfig,
        off: frozenset[str],
        tls_verify: bool | str,
        progress: ProgressCallback | None,
    ) -> tuple[ImageRecord, str | None]:
        """Verify (unless ``image`` is off) and pull; returns the record and the verifying key file."""
        credentials = registry_credentials(ref.registry, task, plugin)
        signer = None
        verified: Verified | None = None
        if "image" in off:
            log.warning("image %s: image signature verification has been disabled", ref)
        else:
            trust = VaultBackedTrust(plugin)
            kept = None if task.force_pull else self._kept_verified(ref, trust)
            if kept is not None:
                return kept[0], str(kept[1].signer.path)
            with RegistryClient(
                ref.api_host,
                insecure_http="http" in off,
                tls_verify=tls_verify,
                credentials=credentials,
                timeout_s=min(float(plugin.pull_activity_timeout), float(task.image_pull_timeout)),
            ) as client:
                verified = verify_image(client, ref, trust)
            signer = str(verified.signer.path)
            log.info(
                "image %s: signature verified: digest %s signed by %s (trusted for %s)",
                ref,
                verified.digest,
                signer,
                verified.signer.scope,
            )
            ref = replace(ref, digest=verified.digest)  # pull exactly what was verified
        self._pin_early(str(ref))
        record = self.puller.pull(
            ref,
            insecure_http="http" in off,
            tls_verify=tls_verify,
            credentials=credentials,
            force=task.force_pull,
            timeout_s=float(task.image_pull_timeout),
            progress=progress,
        )
        if verified is not None and record.signature is None:
            record = replace(record, signature=verified.evidence.to_json())
            self.store.save_image(record.name, record)
        return record, signer

    def _kept_verified(self, ref: DockerReference, trust: SigstoreTrust) -> tuple[ImageRecord, Verified] | None:
        """A stored, complete pull of ``ref`` whose kept signature verifies with today's keys; no registry.

        As docker's driver uses a present image unless ``force_pull``: a tag moved in the registry
        since is not followed, but a key removed from the trust dir refuses the stored image here
        (the registry is then asked, and decides).
        """
        if ref.digest is not None:
            found = self.store.lookup_image(str(ref))
            candidates = [found] if found is not None else []
        else:
            prefix = f"{ref}@"
            candidates = [r for r in self.store.list_images() if r.name.startswith(prefix)]
        for record in sorted(candidates, key=lambda r: r.pulled_at, reverse=True):
            evidence = Evidence.from_json(record.signature) if record.signature else None
            if evidence is None or evidence.digest != record.name.rpartition("@")[2]:
                continue
            self._pin_early(record.name)
            try:
                if not all(self.store.has_blob(d) for d in record.blobs):
                    raise BlobNotFound(record.name)
                verified = verify_evidence(replace(ref, digest=evidence.digest), evidence, trust)
            except (BlobNotFound, SignatureRefused) as exc:
                self._take_early_pin(None)
                log.info("image %s: stored %s not used (%s); asking the registry", ref, record.name, exc)
                continue
            log.info(
                "image %s: stored digest %s verified again with its kept signature by %s (no registry request; "
                "force_pull = true asks the registry)",
                ref,
                evidence.digest,
                verified.signer.path,
            )
            return record, verified
        return None


def gpg_keys_for(name: str, plugin: PluginConfig) -> list[TrustedGPGKey]:
    """OpenPGP keys trusted to sign ACIs called ``name``: the trust_dir keystore, then Vault trust blocks."""
    keys = [
        TrustedGPGKey(k.fingerprint, k.armored, str(k.path)) for k in Keystore([Path(plugin.trust_dir)]).keys_for(name)
    ]
    prefixes = set(name_prefixes(name))
    for trust in plugin.trust:
        if trust.prefix.strip("/") not in prefixes:
            continue
        secret = vault_for(plugin).read(trust.vault_path)
        armored = str(secret.get("key") or secret.get("public_key") or "").encode()
        if b"BEGIN PGP PUBLIC KEY BLOCK" not in armored:
            continue  # a sigstore PEM key: for registry images only
        try:
            fingerprint = gpg.fingerprint_of(armored)
        except InvalidArgument as exc:
            raise InvalidConfig("plugin config", "trust", f"Vault key {trust.vault_path}: {exc.message}") from exc
        keys.append(TrustedGPGKey(fingerprint, armored, f"vault:{trust.vault_path}"))
    return keys
