# The Nomad agent's configuration for the rkt task driver. Paste this into the agent's config
# (or pass it with -config=plugin.hcl) and put the nomad-rkt-driver executable, named "rkt",
# in the agent's plugin_dir. Every option is shown with its default.
# Generated from nomad_rkt_driver/config/plugin.py: run `make plugin.hcl` after changing it.

plugin "rkt" {
  config {
    # OCI runtime that runs the pods: a program name looked up in PATH, or an absolute path.
    runtime = "runc"

    # Per-task monitor (Debian's conmon) that keeps a pod and its exit code while the plugin
    # restarts.
    conmon = "conmon"

    # Directories searched, in order, for the CNI plugin binaries (ptp, bridge, host-local,
    # portmap).
    cni_path = ["/usr/lib/cni", "/opt/cni/bin"]

    # Named CNI networks for jobs' net = [...]: *.conflist (and *.conf) files keyed by their
    # "name"; a network named "default" here replaces the builtin one.
    cni_config_dir = "/etc/nomad-rkt-driver/net.d"

    # IPv4 subnet of the builtin "default" network (CNI ptp + host-local + ipMasq + portmap), as
    # rkt's.
    default_network_subnet = "172.16.28.0/24"

    # Where the driver keeps its image store and pod state; must be on a local filesystem.
    data_dir = "/var/lib/nomad-rkt-driver"

    # How often the driver re-checks its health for Nomad (at least 1s).
    fingerprint_period = "30s"

    # Whether jobs may set privileged = true.
    allow_privileged = false

    # Capabilities jobs may add with cap_add (docker's default set); "ALL" allows any.
    allow_caps = ["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"]

    # Cgroup under which pods are placed when Nomad does not name one.
    cgroup_parent = "/nomad-rkt"

    # Trusted image-signing keys, rkt's layout: root.d/ and prefix.d/<image name prefix>/ holding
    # OpenPGP keys named by fingerprint (ACI) and sigstore public keys as <name>.pub PEM files
    # (Docker/OCI).
    trust_dir = "/etc/nomad-rkt-driver/trustedkeys"

    # A pull fails (and Nomad retries) when no bytes arrived for this long.
    pull_activity_timeout = "2m"
  }
}
