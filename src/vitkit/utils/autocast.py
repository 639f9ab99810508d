"""Which dtype autocast casts to, the same way on every supported torch (the API changed in 2.4)."""

import torch


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast casts matmul inputs to on this device type, or None when autocast is off there."""
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError):  # torch < 2.4: CPU autocast had its own functions
        if device_type == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
        return None
