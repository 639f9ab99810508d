"""Native CPU kernels, compiled from C on first use and loaded with ctypes.

Only where PyTorch has no fast op for a hot loop of ours (Swin's window attention, small multi-head attention).
Each kernel is one C file next to this module (with the shared ``vec16.h``), built with the system C compiler
(``$CC``, else ``cc`` / ``gcc`` / ``clang``) at ``-O3 -march=native`` into a per-user cache (``$VITKIT_CACHE`` or
``~/.cache/vitkit/kernels``), with ``-fopenmp`` where PyTorch runs on GNU OpenMP: the kernel then shares PyTorch's
thread pool, whose idle threads would otherwise spin on the cores it needs. The file name carries a hash of the
source, the compiler, its flags and this CPU, so a cache shared between machines never loads a library built for
another CPU. Without a compiler, or when the build fails, :func:`load` warns once and returns None, and the models
run their PyTorch path: the same numbers, slower. ``VITKIT_NATIVE=0`` turns every kernel off.
"""

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from vitkit.layers.fused import _autocast_on, is_tracing

_HERE = Path(__file__).parent
_ARCH_FLAGS = (("-march=native",), ("-mcpu=native",), ())  # the first one this compiler accepts
_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}


def plain_cpu_inference(x: torch.Tensor) -> bool:
    """What every kernel needs: CPU float32, autograd and autocast off, not tracing / compiling / exporting, and no
    dispatch mode (FLOP counters, fake tensors) that must see the torch ops."""
    return (
        not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not _autocast_on()
        and not is_tracing()
        and _get_current_dispatch_mode() is None
    )


def enabled() -> bool:
    return os.environ.get("VITKIT_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    root = os.environ.get("VITKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vitkit"
    )
    return Path(root) / "kernels"


def compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or cc
    return next((path for name in ("cc", "gcc", "clang") if (path := shutil.which(name))), None)


def _uses_libgomp() -> bool:
    """Whether this process runs GNU OpenMP (PyTorch's Linux wheels bundle it as ``libgomp.so.1``).

    A kernel built with ``-fopenmp`` needs ``libgomp.so.1``; the dynamic linker hands it the copy already
    loaded under that name, so kernel and PyTorch share one pool of threads. Any other runtime: pthreads.
    """
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            return any("/libgomp" in line for line in f)
    except OSError:
        return False


def _cpu_signature() -> str:
    """What a ``-march=native`` build depends on: the CPU model and its feature flags."""
    info = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        keys = ("model name", "flags", "Features")
        info = "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in keys}))
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()} {platform.processor()}\n{info}"


def load(name: str, signatures: dict[str, list] | None = None) -> ctypes.CDLL | None:
    """The compiled ``<name>.c`` of this package (built on first use), or None where it cannot be built.

    ``signatures``: C argument types of the library's functions, set once when it is loaded (all return int).
    """
    if not enabled() or os.name != "posix":
        return None
    with _lock:
        if name not in _loaded:
            lib = _loaded[name] = _build_and_load(name)
            for symbol, argtypes in (signatures or {}).items():
                if lib is not None:
                    getattr(lib, symbol).argtypes = argtypes
                    getattr(lib, symbol).restype = ctypes.c_int
        return _loaded[name]


def _build_and_load(name: str) -> ctypes.CDLL | None:
    source = _HERE / f"{name}.c"
    cc = compiler()
    if cc is None:
        warnings.warn(f"vitkit: no C compiler found (set $CC): {name} runs on its slower PyTorch path", stacklevel=3)
        return None
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        warnings.warn(f"vitkit: C compiler {cc!r} does not run ({e}): {name} runs on its PyTorch path", stacklevel=3)
        return None
    code = source.read_bytes() + b"".join(h.read_bytes() for h in sorted(_HERE.glob("*.h")))  # + shared headers
    errors = []
    openmp = ("-fopenmp",) if _uses_libgomp() else ()
    for flags in _ARCH_FLAGS:
        args = ("-O3", *flags, *openmp, "-ffp-contract=fast", "-fPIC", "-shared")
        key = hashlib.sha256(b"\0".join([code, cc.encode(), version.encode(), " ".join(args).encode(),
                                          _cpu_signature().encode()])).hexdigest()[:16]  # fmt: skip
        target = cache_dir() / f"{name}-{key}.so"
        if not target.exists():
            error = _compile(cc, args, source, target)
            if error:
                errors.append(f"{cc} {' '.join(args)}: {error}")
                continue
        try:
            return ctypes.CDLL(str(target))
        except OSError as e:
            errors.append(f"loading {target}: {e}")
    warnings.warn(
        f"vitkit: could not build the native kernel {name} ({errors[-1][-500:]}); it runs on its PyTorch path",
        stacklevel=3,
    )
    return None


def _compile(cc: str, args: tuple[str, ...], source: Path, target: Path) -> str | None:
    """Build into a temporary file beside ``target``, then rename: a reader never sees half a library."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as e:
        return f"cache directory {target.parent}: {e}"
    try:
        done = subprocess.run(
            [cc, *args, "-o", tmp, str(source), "-lpthread"], capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            return (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        os.replace(tmp, target)
        return None
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
