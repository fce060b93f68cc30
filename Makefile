# The two commands of the README:
#   make demo   set up this machine, build the example image and serve jobs/web.nomad.hcl through the plugin
#               (the page is at the printed 127.0.0.1:<port> address; Ctrl-C stops and cleans up)
#   make test   set up this machine and run the whole test suite (what CI runs)
.PHONY: setup test check demo bench proto plugin.hcl docs

setup:
	scripts/setup.sh

test: setup check

check:
	scripts/test.sh

demo: setup
	scripts/build-demo-images.sh
	.venv/bin/nomad-rkt-driver fingerprint --plugin-config plugin.hcl
	.venv/bin/nomad-rkt-driver run jobs/hello.nomad.hcl --plugin-config plugin.hcl
	.venv/bin/nomad-rkt-driver run jobs/web.nomad.hcl --plugin-config plugin.hcl

bench: setup
	.venv/bin/python bench/handshake/run.py
	.venv/bin/python bench/pods/run.py
	.venv/bin/python bench/pull/run.py
	.venv/bin/python bench/network/run.py

proto:
	PATH="$(CURDIR)/.venv/bin:$$PATH" scripts/genproto.sh

plugin.hcl:
	.venv/bin/python -c "from nomad_rkt_driver.config.render import plugin_hcl; print(plugin_hcl(), end='')" > plugin.hcl

docs:
	.venv/bin/python -c "from nomad_rkt_driver.config.render import reference_md; print(reference_md(), end='')" > docs/configuration.md
