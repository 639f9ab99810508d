"""The device names a user may give (``--device``), checked before torch sees them.

torch's own error for an unknown name (``--device tpu``) is a multi-line RuntimeError listing every backend it was
built with; checking the spelling here keeps the error to one line that names the flag.
"""

import re

DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


def is_device_name(name: str) -> bool:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (whether that device exists is checked when it is used)."""
    return bool(_DEVICE.fullmatch(name))
