# A batch job: print a greeting from a busybox image and exit 0.
# `make demo` builds the image (scripts/build-demo-images.sh) and runs this job with
# `nomad-rkt-driver run jobs/hello.nomad.hcl`; under a Nomad agent, use an absolute oci: path or a
# registry image instead (the runner resolves relative oci: paths against the job file).
job "hello" {
  datacenters = ["dc1"]
  type        = "batch"

  group "hello" {
    task "hello" {
      driver = "rkt"

      config {
        image   = "oci:images/busybox:1"
        command = "/bin/echo"
        args    = ["hello from rkt, task ${NOMAD_TASK_NAME} of job ${NOMAD_JOB_NAME}"]
        net     = ["none"]

        # A local OCI layout carries no signature: opt out of verification, as rkt requires.
        insecure_options = ["image"]
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
