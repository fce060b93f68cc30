# The agent's plugin block for jobs/aci.nomad.hcl: the demo trust dir that scripts/build-demo-images.sh
# fills with the demo publisher's OpenPGP key (prefix.d/example.com/<fingerprint>). nomad-rkt-driver's
# commands take a relative path in a --plugin-config file from that file's directory; a Nomad agent's
# config needs an absolute path (the default is /etc/nomad-rkt-driver/trustedkeys).
plugin "rkt" {
  config {
    trust_dir = "images/trustedkeys"
  }
}
