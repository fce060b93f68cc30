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

    # IPv6 subnet of the builtin "default" network, e.g. "fd52:6b74::/64"; set, it makes pods on
    # it dual-stack (an IPv6 address beside the IPv4 one, IPv6 masquerade and port forwarding); ""
    # (the default) means IPv4 only. Needs IPv6 enabled on the host and ip6tables.
    default_network_subnet6 = ""

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

    # Host volumes named by jobs (off by default).
    volumes {
      # Whether tasks may bind-mount any host path with volumes = [...]. Off, only relative paths
      # (inside the allocation dir) are allowed; Nomad's own volume_mount / host_volume mounts
      # always work.
      enabled = false
    }

    # Whether jobs may pass host devices with the task config's devices = [...] (devices Nomad's
    # device plugins assign are always passed).
    allow_devices = false

    # Most processes a pod may have (pids cgroup): the default for tasks and the ceiling of their
    # pids_limit; 0 means no limit.
    pids_limit = 0

    # Vault (or OpenBao) for registry credentials and trust keys.
    vault {
      # Vault address, e.g. https://vault.example.com:8200 (default: VAULT_ADDR).
      # address = <string>   (no default)
      # Vault Enterprise / OpenBao namespace.
      # namespace = <string>   (no default)
      # CA certificate file for Vault's TLS.
      # ca_cert = <string>   (no default)
      # Do not verify Vault's TLS certificate (testing only).
      tls_skip_verify = false
      # How long secrets without a lease are cached.
      cache_ttl = "1m"
      # How to log in.
      auth {
        # A Vault token (prefer token_file).
        # token = <string>   (no default)
        # File holding a Vault token.
        # token_file = <string>   (no default)
        # AppRole login.
        approle {
          # AppRole role id.
          # role_id = <string>   (no default)
          # File holding the AppRole secret id.
          # secret_id_file = <string>   (no default)
          # Where the AppRole auth method is mounted.
          mount = "approle"
        }
      }
    }

    # Registry credentials for every task.
    auth {
      # A docker config.json with auths/credHelpers/credsStore.
      # config = <string>   (no default)
      # A docker credential helper name (runs "docker-credential-<helper> get").
      # helper = <string>   (no default)
      # Vault path of registry credentials; "{registry}" becomes the registry host, e.g.
      # "secret/data/registry/{registry}".
      # vault_path = <string>   (no default)
    }

    # Image-signing keys read from Vault, trusted for a name prefix.
    # trust {   (repeat as needed; none by default)
    #   prefix = <string>
    #   vault_path = <string>
    # }

    # Garbage collection.
    gc {
      # Remove an image from the store once no task has used it for image_delay.
      image = true
      # How long an unused image is kept (a restart reuses it).
      image_delay = "3m"
      # Reconcile pods and networks no task claims.
      dangling_pods {
        # Remove pods that no task of this plugin claims, and networks without a pod.
        enabled = true
        # Only log what would be removed.
        dry_run = false
        # How often the reconciler runs (at least 1s).
        period = "5m"
        # Nothing younger than this is removed, and nothing before the plugin has been up this
        # long (Nomad recovers its tasks first).
        creation_grace = "5m"
      }
      # Disk budget of the image store, e.g. "10GiB" or "500GB" (IEC or SI units): after a pull
      # and after image GC, the least recently used images no task uses are removed until the
      # store fits. Unset: no budget.
      # image_store_max = <string>   (no default)
    }

    # Trusted image-signing keys, rkt's layout: root.d/ and prefix.d/<image name prefix>/ holding
    # OpenPGP keys named by fingerprint (ACI) and sigstore public keys as <name>.pub PEM files
    # (Docker/OCI).
    trust_dir = "/etc/nomad-rkt-driver/trustedkeys"

    # What an image string without a transport means: "docker" (busybox:1 is docker://busybox:1,
    # as in Nomad's docker driver) or "appc" (an appc name found by discovery, rkt's own default).
    # Paths, URLs, sha512- IDs and names with ,label=value are recognised either way.
    default_image_transport = "docker"

    # A PEM file of CA certificates trusted, in addition to the system CAs, for HTTPS to
    # registries, ACI URLs and appc discovery (e.g. a private CA). insecure_options = ["tls"]
    # still skips verification.
    # tls_ca_file = <string>   (no default)

    # A pull fails (and Nomad retries) when no bytes arrived for this long.
    pull_activity_timeout = "2m"
  }
}
