# A web service: busybox httpd in an image that exposes 8080/tcp, which rkt names "8080-tcp".
# Nomad gives the group a dynamic port "http"; port_map maps it onto the image's named port, rkt
# style, over the default CNI network (ptp + host-local + portmap). `make demo` builds the image
# and serves this job with `nomad-rkt-driver run jobs/web.nomad.hcl`; the page is then at the
# printed address (127.0.0.1:<dynamic port>) until Ctrl-C.
job "web" {
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
        net     = ["default"]

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
