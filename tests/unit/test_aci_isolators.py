"""An ACI's isolators and supplementaryGIDs, from the manifest to the OCI config: the manifest's
rules, then rkt's precedence (default set → image retain/remove-set → task cap_add/cap_drop, the
plugin's allow_caps bounding it all; the job's oom_score_adj and Nomad's resources win)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from nomad_rkt_driver.config.decode import decode
from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.driver import podspec
from nomad_rkt_driver.errors import InvalidConfig
from nomad_rkt_driver.images.acimanifest import InvalidACIManifest, parse_manifest
from nomad_rkt_driver.images.imageconfig import ImageDefaults
from nomad_rkt_driver.network.attach import Attachment
from nomad_rkt_driver.runtime import security
from nomad_rkt_driver.runtime.spec import HostLimits, PodSpec, build_config
from nomad_rkt_driver.types import Resources, TaskRequest

WHERE = "rkt task config"
NET = Attachment(netns="", ip="", resolv_conf="/etc/resolv.conf", hosts="/etc/hosts")
HOST = HostLimits(hard_rlimits={"RLIMIT_NOFILE": 4096}, caps=frozenset(security.ALL_CAPS))
RETAIN = "os/linux/capabilities-retain-set"
REMOVE = "os/linux/capabilities-remove-set"


def manifest(isolators: list[dict[str, Any]], **app: Any) -> bytes:
    return json.dumps(
        {
            "acKind": "ImageManifest",
            "acVersion": "0.8.11",
            "name": "example.com/app",
            "app": {"exec": ["/bin/sh"], "user": "0", "group": "0", "isolators": isolators, **app},
        }
    ).encode()


def defaults(isolators: list[dict[str, Any]], **app: Any) -> ImageDefaults:
    return parse_manifest(manifest(isolators, **app), "x.aci").defaults()


def build(image: ImageDefaults, cfg: dict[str, Any] | None = None, plugin: dict[str, Any] | None = None,
          resources: Resources | None = None) -> PodSpec:  # fmt: skip
    task = TaskRequest(id="a1/web/x", name="web", alloc_id="a1", driver_config=b"", resources=resources or Resources())
    return podspec.build(
        task,
        decode(TaskConfig, {"image": "example.com/app:1", **(cfg or {})}, WHERE),
        image,
        (),
        decode(PluginConfig, plugin or {}, "plugin"),
        WHERE,
        NET,
    )


def oci(spec: PodSpec) -> dict[str, Any]:
    return build_config(spec, "/rootfs", HOST)


def effective(spec: PodSpec) -> list[str]:
    return list(oci(spec)["process"]["capabilities"]["effective"])


# -- the manifest -------------------------------------------------------------------------------


def test_isolators_are_sorted_into_applied_resource_and_ignored() -> None:
    image = defaults(
        [
            {"name": RETAIN, "value": {"set": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]}},
            {"name": "os/linux/no-new-privileges", "value": True},
            {"name": "os/linux/oom-score-adj", "value": 300},
            {"name": "resource/memory", "value": {"request": "1G", "limit": "2G"}},
            {"name": "resource/cpu", "value": {"request": "250m", "limit": "500m"}},
            {"name": "os/linux/seccomp-retain-set", "value": {"set": ["@rkt/default-whitelist"]}},
            {"name": "os/linux/selinux-context", "value": {"user": "u", "role": "r", "type": "t", "level": "s0"}},
            {"name": "resource/network-bandwidth", "value": {"default": True, "limit": "1G"}},
        ],
        supplementaryGIDs=[10, 20],
    )
    assert image.caps_retain == ("CAP_NET_BIND_SERVICE", "CAP_CHOWN")
    assert (image.caps_remove, image.no_new_privileges, image.oom_score_adj) == ((), True, 300)
    assert image.supplementary_gids == (10, 20)
    assert image.resource_isolators == ("resource/memory", "resource/cpu")
    assert image.ignored_isolators == (
        "os/linux/seccomp-retain-set",
        "os/linux/selinux-context",
        "resource/network-bandwidth",
    )
    plain = defaults([])
    assert (plain.caps_retain, plain.caps_remove, plain.supplementary_gids, plain.oom_score_adj) == (None, (), (), None)


@pytest.mark.parametrize(
    ("isolators", "fragment"),
    [
        ([{"name": RETAIN, "value": {"set": []}}], "non-empty list of capability names"),
        ([{"name": RETAIN, "value": ["CAP_CHOWN"]}], '{"set": ["CAP_...", ...]}'),
        ([{"name": REMOVE, "value": {"set": ["chown"]}}], "'chown' is not a capability name"),
        (
            [{"name": RETAIN, "value": {"set": ["CAP_CHOWN"]}}, {"name": REMOVE, "value": {"set": ["CAP_KILL"]}}],
            "cannot both be given",
        ),
        ([{"name": RETAIN, "value": {"set": ["CAP_CHOWN"]}}] * 2, "appears twice"),
        ([{"name": "os/linux/no-new-privileges", "value": "yes"}], "must be true or false"),
        ([{"name": "os/linux/oom-score-adj", "value": 1001}], "from -1000 to 1000"),
        ([{"name": "os/linux/oom-score-adj", "value": True}], "from -1000 to 1000"),
        ([{"value": {}}], "app.isolators[0].name: is required"),
    ],
)
def test_bad_isolators_name_the_field(isolators: list[dict[str, Any]], fragment: str) -> None:
    with pytest.raises(InvalidACIManifest) as info:
        parse_manifest(manifest(isolators), "x.aci")
    assert fragment in str(info.value) and "app.isolators" in str(info.value)


# -- capabilities: default → image → task, bounded by allow_caps --------------------------------


def test_without_isolators_the_default_set_applies() -> None:
    assert effective(build(defaults([]))) == sorted(security.DEFAULT_CAPS)


def test_retain_set_replaces_the_default_set_and_the_task_adds_and_drops_on_top() -> None:
    image = defaults([{"name": RETAIN, "value": {"set": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_KILL"]}}])
    assert effective(build(image)) == ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    spec = build(image, {"cap_add": ["setuid"], "cap_drop": ["kill"]})
    assert effective(spec) == ["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_SETUID"]
    # the seccomp profile follows the reduced set
    assert "mount" in oci(spec)["linux"]["seccomp"]["syscalls"][0]["names"]


def test_remove_set_takes_from_the_default_set() -> None:
    image = defaults([{"name": REMOVE, "value": {"set": ["CAP_NET_RAW", "CAP_MKNOD"]}}])
    assert effective(build(image)) == sorted(set(security.DEFAULT_CAPS) - {"CAP_NET_RAW", "CAP_MKNOD"})
    assert "CAP_NET_RAW" in effective(build(image, {"cap_add": ["NET_RAW"]}))  # the task wins


def test_a_retained_capability_outside_allow_caps_is_refused_with_the_fix() -> None:
    image = defaults([{"name": RETAIN, "value": {"set": ["CAP_CHOWN", "CAP_SYS_ADMIN"]}}])
    with pytest.raises(InvalidConfig) as info:
        build(image)
    problem = info.value.problem
    assert info.value.attribute == "image"
    for needle in ("example.com/app:1", RETAIN, "CAP_SYS_ADMIN", "allow_caps", 'cap_drop = ["SYS_ADMIN"]'):
        assert needle in problem, problem
    assert "asks for CAP_SYS_ADMIN, which" in problem  # only what is refused is named
    # the operator's allow_caps, or the job dropping it, lets it run
    assert effective(build(image, plugin={"allow_caps": ["CHOWN", "SYS_ADMIN"]})) == ["CAP_CHOWN", "CAP_SYS_ADMIN"]
    assert effective(build(image, plugin={"allow_caps": ["ALL"]})) == ["CAP_CHOWN", "CAP_SYS_ADMIN"]
    assert effective(build(image, {"cap_drop": ["SYS_ADMIN"]})) == ["CAP_CHOWN"]


def test_an_unknown_capability_in_the_image_is_named() -> None:
    image = defaults([{"name": REMOVE, "value": {"set": ["CAP_FLY"]}}])
    with pytest.raises(InvalidConfig, match=r"names CAP_FLY, which Linux does not know"):
        build(image)


def test_insecure_capabilities_and_privileged_keep_their_meaning() -> None:
    image = defaults([{"name": RETAIN, "value": {"set": ["CAP_CHOWN", "CAP_SYS_ADMIN"]}}])
    assert effective(build(image, {"insecure_options": ["capabilities"]})) == sorted(security.ALL_CAPS)
    spec = build(image, {"privileged": True}, {"allow_privileged": True})
    assert effective(spec) == sorted(security.ALL_CAPS)


# -- the rest -----------------------------------------------------------------------------------


def test_supplementary_gids_become_additional_gids() -> None:
    config = oci(build(defaults([], supplementaryGIDs=[10, 27])))
    assert config["process"]["user"]["additionalGids"] == [10, 27]
    assert "additionalGids" not in oci(build(defaults([])))["process"]["user"]


def test_oom_score_adj_is_the_default_when_neither_the_job_nor_nomad_sets_one() -> None:
    image = defaults([{"name": "os/linux/oom-score-adj", "value": 300}])
    assert oci(build(image))["process"]["oomScoreAdj"] == 300
    assert oci(build(image, {"oom_score_adj": 700}))["process"]["oomScoreAdj"] == 700
    assert oci(build(image, resources=Resources(oom_score_adj=500)))["process"]["oomScoreAdj"] == 500
    lowered = defaults([{"name": "os/linux/oom-score-adj", "value": -900}])
    assert oci(build(lowered))["process"]["oomScoreAdj"] == 0


def test_no_new_privileges_stays_on_whatever_the_image_says(caplog: pytest.LogCaptureFixture) -> None:
    for value in (True, False):
        image = defaults([{"name": "os/linux/no-new-privileges", "value": value}])
        assert oci(build(image))["process"]["noNewPrivileges"] is True
    assert "os/linux/no-new-privileges=false (kept on" in caplog.text


def test_nomads_resources_win_over_the_image_and_unsupported_isolators_log_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="nomad_rkt_driver.driver.podspec")
    image = defaults(
        [
            {"name": "resource/memory", "value": {"limit": "1G"}},
            {"name": "os/linux/apparmor-profile", "value": {"name": "x"}},
            {"name": "resource/block-bandwidth", "value": {"limit": "1M"}},
        ]
    )
    spec = build(image, resources=Resources(memory_mb=64))
    assert spec.resources.memory_limit_bytes == 64 << 20
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert "os/linux/apparmor-profile; resource/block-bandwidth" in warnings[0].getMessage()
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("resource/memory ignored: Nomad's resources" in m for m in debug), debug


def test_the_retain_set_is_bounded_by_what_the_host_holds(tmp_path: Path) -> None:
    image = defaults([{"name": RETAIN, "value": {"set": ["CAP_CHOWN", "CAP_KILL"]}}])
    host = HostLimits(hard_rlimits={"RLIMIT_NOFILE": 4096}, caps=frozenset({"CAP_CHOWN"}))
    assert build_config(build(image), str(tmp_path), host)["process"]["capabilities"]["bounding"] == ["CAP_CHOWN"]
