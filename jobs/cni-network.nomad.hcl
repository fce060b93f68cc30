# A web service on a named CNI network: "bridge-net" is a Linux bridge (bridge + host-local IPAM
# + portmap), defined by jobs/cni/bridge-net.conflist; the plugin finds it through cni_config_dir
# (see cni-network.plugin.hcl). Nomad's dynamic port "http" is mapped onto the image's named port
# 8080-tcp, rkt style. From the repository root, after `make demo` built the image:
#
#   nomad-rkt-driver run jobs/cni-network.nomad.hcl --plugin-config jobs/cni-network.plugin.hcl
#
# Another network from the same directory: -var network=NAME. This is a network of the driver's own,
# chosen per task; for Nomad's group bridge networking see bridge.nomad.hcl.
variable "network" {
  type        = string
  default     = "bridge-net"
  description = "CNI network name (the \"name\" of a conflist in the plugin's cni_config_dir)"
}

job "cni-network" {
  datacenters = ["dc1"]
  type        = "service"

  group "web" {
    network {
      port "http" {}
    }

    task "httpd" {
      driver = "rkt"

      config {
        image   = "oci:images/busybox:1"
        command = "/bin/httpd"
        args    = ["-f", "-p", "8080", "-h", "/www"]
        net     = [var.network]

        port_map {
          http = "8080-tcp"
        }

        # A local OCI layout carries no signature: opt out of verification, as rkt requires.
        insecure_options = ["image"]
      }

      kill_timeout = "5s"

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
