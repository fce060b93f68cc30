# A web service: busybox httpd in an image that names its port "8080-tcp" (Docker EXPOSE 8080/tcp,
# named the rkt way). Nomad gives the group a dynamic port "http"; port_map maps it onto the
# image's named port, rkt style.
#
# Status: the task config below is validated against the driver's schema in CI. Running it needs
# the pods, networks and runner work (issues 4, 5, 7); until then `make demo` shows the driver
# as a Nomad agent sees it.
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
        image   = "docker://127.0.0.1:5000/nomad-rkt/httpd:1"
        command = "/bin/httpd"
        args    = ["-f", "-p", "8080", "-h", "/www"]
        net     = ["default"]

        port_map {
          http = "8080-tcp"
        }

        # The local test registry speaks plain HTTP and its images are not signed.
        insecure_options = ["http", "image"]
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
