# A batch job from a gpg-signed local ACI, verified without any insecure_options: its signature
# (images/busybox.aci.asc) must be made by a key trusted for the image's manifest name
# (example.com/busybox), which jobs/aci.plugin.hcl's trust_dir holds under prefix.d/example.com.
# `scripts/build-demo-images.sh` builds the ACI, signs it with a throwaway key and trusts that key;
# run it with `nomad-rkt-driver run jobs/aci.nomad.hcl --plugin-config jobs/aci.plugin.hcl`.
# The ACI's manifest also names a port, "http" (8080/tcp), for port_map { http = "http" }.
job "aci" {
  datacenters = ["dc1"]
  type        = "batch"

  group "aci" {
    task "aci" {
      driver = "rkt"

      config {
        image        = "images/busybox.aci"
        net          = ["none"]
        trust_prefix = "example.com"
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
