# The driver tests' fixtures (a running plugin, a busybox image, a checked data dir) serve here too.
from tests.integration.driver.conftest import cgroup_parent, data_dir, image, plugin

__all__ = ["cgroup_parent", "data_dir", "image", "plugin"]
