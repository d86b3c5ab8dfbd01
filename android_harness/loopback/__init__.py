"""The loopback device: a host-side adb daemon the real `adb` server attaches to.

    with LoopbackDaemon(tmp_path / "device") as device:
        client.connect(device.serial)          # adb connect 127.0.0.1:PORT

See `daemon.py` (transport, services, faults, knobs), `shell.py` (the device shell), `device.py` (the
property set and fake sysfs tree) and `shims/` (the runners).
"""

from .daemon import Faults, Knobs, LoopbackDaemon
from .device import Cluster, LoopbackConfig

__all__ = ["LoopbackDaemon", "Faults", "Knobs", "LoopbackConfig", "Cluster"]
