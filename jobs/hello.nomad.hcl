# A batch job: print a greeting from a busybox image and exit 0.
#
# Status: validated against the driver's schema in CI; running it needs the pods and runner work.
job "hello" {
  datacenters = ["dc1"]
  type        = "batch"

  group "hello" {
    task "hello" {
      driver = "rkt"

      config {
        image            = "docker://127.0.0.1:5000/nomad-rkt/busybox:1"
        command          = "/bin/echo"
        args             = ["hello from rkt"]
        net              = ["none"]
        insecure_options = ["http", "image"]
      }
    }
  }
}
