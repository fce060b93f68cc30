"""Getting a task's image into the store and ready for a pod: fetch, verify, unpack.

The policy is rkt's: images must be verified unless the task opts out with
``insecure_options = ["image"]``; plain-HTTP registries need ``http``; skipping TLS checks
needs ``tls``. Docker/OCI signature verification (sigstore) is not built yet, so — exactly like
rkt for docker images — such images are refused without the ``image`` opt-out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.driver.insecure import expand
from nomad_rkt_driver.errors import InvalidArgument, InvalidConfig, NotImplementedYet
from nomad_rkt_driver.images.auth import Credentials, resolve_credentials
from nomad_rkt_driver.images.imageconfig import ImageDefaults, image_defaults
from nomad_rkt_driver.images.layout import import_image
from nomad_rkt_driver.images.pull import Puller, PullProgress
from nomad_rkt_driver.images.reference import (
    DockerArchiveReference,
    DockerReference,
    OCIArchiveReference,
    OCILayoutReference,
    parse_reference,
)
from nomad_rkt_driver.images.store import ImageRecord, Store

log = logging.getLogger(__name__)
ProgressCallback = Callable[[PullProgress], None]


@dataclass(frozen=True)
class ReadyImage:
    """An image in the store with its layers unpacked, top layer first, and its pod defaults."""

    record: ImageRecord
    defaults: ImageDefaults
    lower_dirs: tuple[Path, ...]


class Images:
    """The driver's access to the image store; blocking, called from worker threads."""

    def __init__(self, store: Store, puller: Puller) -> None:
        self.store = store
        self.puller = puller

    def prepare(
        self, task: TaskConfig, plugin: PluginConfig, where: str, progress: ProgressCallback | None = None
    ) -> ReadyImage:
        """Fetch (or import) the task's image, check the trust policy, unpack its layers."""
        try:
            ref = parse_reference(task.image)
        except InvalidArgument as exc:  # the parser names the text and the accepted forms
            raise InvalidConfig(where, "image", str(exc)) from exc
        off = expand(task.insecure_options)
        if "image" not in off:
            raise InvalidConfig(
                where,
                "image",
                f"signature verification for {ref.transport} images is not "
                'supported yet (try insecure_options = ["image"])',
            )
        if isinstance(ref, DockerReference):
            credentials = None
            if task.auth.username:
                credentials = Credentials(username=task.auth.username, password=task.auth.password or "")
            credentials = resolve_credentials(ref.registry, explicit=credentials)
            record = self.puller.pull(
                ref,
                insecure_http="http" in off,
                tls_verify="tls" not in off,
                credentials=credentials,
                force=task.force_pull,
                timeout_s=float(task.image_pull_timeout),
                progress=progress,
            )
        elif isinstance(ref, OCILayoutReference | OCIArchiveReference | DockerArchiveReference):
            record = import_image(self.store, ref)
        else:
            raise NotImplementedYet(
                f"{ref.transport} images are not supported yet; use a docker://, oci:, "
                "oci-archive: or docker-archive: image"
            )
        defaults = image_defaults(self.store.read_bytes(record.config_digest), record.config_digest)
        lower = [
            self.store.unpacked_layer(layer.digest, layer.media_type, diff_id=layer.diff_id) for layer in record.layers
        ]
        return ReadyImage(record, defaults, tuple(reversed(lower)))
