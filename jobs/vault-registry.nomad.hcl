# A batch job whose image lives in a private registry: the plugin reads the registry's username
# and password from Vault (or OpenBao) at the path below, "{registry}" being the image's registry
# host; the job never holds a credential. The plugin needs a vault {} block: see
# vault-registry.plugin.hcl next to this file.
#
#   vault kv put secret/registry/registry.example.com:5000 username=ci password=...
#   nomad-rkt-driver run jobs/vault-registry.nomad.hcl --plugin-config jobs/vault-registry.plugin.hcl \
#     -var registry=registry.example.com:5000
#
# Input variables are set as with `nomad job run`: -var NAME=VALUE, -var-file FILE, or
# NOMAD_VAR_<name> in the environment.
variable "registry" {
  type        = string
  default     = "registry.example.com:5000"
  description = "host:port of the private registry"
}

variable "image" {
  type        = string
  default     = "team/hello:v1"
  description = "repository and tag in that registry"
}

variable "insecure_options" {
  type        = list(string)
  default     = []
  description = "rkt's insecure options; a test registry with a self-signed certificate and unsigned images needs [\"tls\", \"image\"]"
}

job "vault-registry" {
  datacenters = ["dc1"]
  type        = "batch"

  group "app" {
    task "hello" {
      driver = "rkt"

      config {
        image = "${var.registry}/${var.image}"
        net   = ["none"]

        # KV v2 path (KV v1 works too) holding username/password, auth, or identitytoken.
        auth {
          vault_path = "secret/data/registry/{registry}"
        }

        # Secure by default: TLS verified and a trusted signature required unless opted out.
        insecure_options = var.insecure_options
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
