"""Build a tiny root filesystem from Debian's busybox-static, as two overlay "layers".

The base layer holds ``/bin/busybox``, one symlink per applet, ``/etc/passwd`` and ``/etc/group``
(root and ``nobody``) and the usual empty directories; the upper layer adds ``/etc/motd`` and
``/srv/hello.txt`` and *replaces* ``/etc/hostname``, so a test can see that the top layer wins.
No image store and no network are involved.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

BUSYBOX: Final = "/bin/busybox"
INSTALL_HINT: Final = "apt-get install busybox-static (Debian's static busybox at /bin/busybox)"
PASSWD: Final = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP: Final = "root:x:0:\nnogroup:x:65534:\n"
BASE_DIRS: Final = ("bin", "etc", "dev", "proc", "sys", "tmp", "root", "var/tmp", "srv")


def busybox_applets() -> list[str]:
    """The applet names the installed busybox provides; raises RuntimeError with the install hint."""
    if not os.access(BUSYBOX, os.X_OK):
        raise RuntimeError(f"{BUSYBOX} is missing: {INSTALL_HINT}")
    done = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    return [name for name in done.stdout.split() if name and "/" not in name]


def base_layer(dest: Path) -> Path:
    """Write the busybox base layer into ``dest`` (created) and return it."""
    for sub in BASE_DIRS:
        (dest / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    for applet in busybox_applets():
        link = dest / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    (dest / "etc" / "hostname").write_text("base\n")
    return dest


def upper_layer(dest: Path) -> Path:
    """Write the small upper layer into ``dest`` (created) and return it."""
    (dest / "etc").mkdir(parents=True, exist_ok=True)
    (dest / "srv").mkdir(parents=True, exist_ok=True)
    (dest / "etc" / "motd").write_text("built by tests/rootfs.py\n")
    (dest / "etc" / "hostname").write_text("upper\n")
    (dest / "srv" / "hello.txt").write_text("hello from the upper layer\n")
    return dest


def busybox_layers(root: Path) -> list[Path]:
    """Both layers under ``root``, top first (the order overlayfs ``lowerdir`` wants)."""
    base = base_layer(root / "layer0")
    upper = upper_layer(root / "layer1")
    return [upper, base]
