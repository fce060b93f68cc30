"""nomad-rkt-driver: a daemonless, rkt-style Nomad task driver plugin."""

# The one place the version is written: pyproject.toml reads it (setuptools dynamic version), and
# PluginInfo returns it without importlib.metadata, which costs ~15 ms at every plugin start.
__version__ = "0.1.0"

PLUGIN_NAME = "rkt"  # the driver name jobs use (driver = "rkt"); keep the plugin file name equal
PLUGIN_API_VERSIONS = ("v0.1.0",)  # Nomad's only driver plugin API version
