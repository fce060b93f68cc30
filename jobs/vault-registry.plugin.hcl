# The agent's plugin block for jobs/vault-registry.nomad.hcl: the driver logs in to Vault (or
# OpenBao) to read registry credentials. Left empty, address and token come from VAULT_ADDR and
# VAULT_TOKEN in the plugin's environment (the Nomad agent's, or the shell running
# `nomad-rkt-driver run`); set them here instead for an agent:
#
#   vault {
#     address = "https://vault.example.com:8200"
#     auth {
#       token_file = "/etc/nomad-rkt-driver/vault-token"   # or approle { role_id secret_id_file }
#     }
#   }
plugin "rkt" {
  config {
    vault {
      cache_ttl = "1m"
    }
  }
}
