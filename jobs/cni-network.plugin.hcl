# The agent's plugin block for jobs/cni-network.nomad.hcl: named CNI networks come from cni_config_dir,
# here the conflists shipped in jobs/cni/. nomad-rkt-driver's commands take a relative path in a
# --plugin-config file from that file's directory; a Nomad agent's config needs an absolute path
# (the default is /etc/nomad-rkt-driver/net.d).
plugin "rkt" {
  config {
    cni_config_dir = "cni"
  }
}
