# Nomad's group bridge networking: the group gets one network namespace for the whole allocation,
# made by the Nomad client (here: by `nomad-rkt-driver run`, which plays the client) on Nomad's
# `nomad` bridge (172.26.64.0/20), and every task joins it. Port "http" is forwarded from a dynamic
# host port to 8080 in that namespace; the tasks see NOMAD_PORT_http = 8080.
#
# httpd serves the page on 8080; probe, a second task in the same namespace, fetches it from
# 127.0.0.1:8080 (its own loopback, shared with httpd) and prints it. From the repository root,
# after `make demo` built the image:
#
#   nomad-rkt-driver run jobs/bridge.nomad.hcl
#
# The page is then at the printed address (127.0.0.1:<host port>) until Ctrl-C. No plugin config
# is needed; a `client { bridge_network_name = ..., bridge_network_subnet = ... }` block beside
# the plugin block of --plugin-config changes the bridge as in a Nomad agent's config.
job "bridge" {
  datacenters = ["dc1"]
  type        = "service"

  group "web" {
    network {
      mode = "bridge"

      port "http" {
        to = 8080
      }
    }

    task "httpd" {
      driver = "rkt"

      config {
        image   = "oci:images/busybox:1"
        command = "/bin/httpd"
        args    = ["-f", "-p", "${NOMAD_PORT_http}", "-h", "/www"]

        # A local OCI layout carries no signature: opt out of verification, as rkt requires.
        insecure_options = ["image"]
      }

      kill_timeout = "5s"

      resources {
        cpu    = 100
        memory = 64
      }
    }

    task "probe" {
      driver = "rkt"

      config {
        image   = "oci:images/busybox:1"
        command = "/bin/sh"
        args = [
          "-c",
          "trap 'exit 0' INT TERM; until page=$(wget -q -O - http://127.0.0.1:${NOMAD_PORT_http}/); do sleep 0.5; done; echo \"reached httpd at 127.0.0.1:${NOMAD_PORT_http} in the shared namespace: $page\"; while :; do sleep 3600 & wait; done",
        ]
        insecure_options = ["image"]
      }

      kill_timeout = "5s"

      resources {
        cpu    = 50
        memory = 32
      }
    }
  }
}
