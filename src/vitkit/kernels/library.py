"""Build, verify and load a kernel: ``<name>.c`` -> ``<name>-<build key>-<content hash>.so`` -> ctypes.

Why each step is there:

* **Trusted cache only.** A shared library runs with the user's rights, so it is loaded only from a folder that is the
  user's own and private: the cache folder and each folder above it must not be replaceable by anyone else (owned by
  the user or root, not writable by group or others unless sticky like ``/tmp``), and every file loaded must be a
  regular file owned by the user and writable by nobody else. A cache that fails these checks is not used: the
  kernel is built in a private temporary folder for this process instead, with one warning naming the problem.
* **Verified files.** The file name ends in the SHA-256 of the library's bytes, checked before it is loaded: a
  truncated or damaged library (which ``dlopen`` would map and crash on) is deleted and built again. A library that
  lacks a symbol, or gives wrong numbers on a small self-test, is never used.
* **Never half-written.** Each build goes to a temporary file that is renamed into place; concurrent builders each
  produce a complete file.
* **No stalls.** The compiler runs in its own process group with a time limit; on timeout the whole group is killed.

Without a compiler, or when any of this fails, :func:`load` returns None after one warning, and callers run their
PyTorch path.
"""

import atexit
import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

from vitkit.errors import VitkitError
from vitkit.settings import c_compiler_name, kernel_arch_flags, kernel_cache_dir
from vitkit.utils.io import sha256_file

SOURCE_DIR = Path(__file__).parent
ARCH_FLAGS = (("-march=native",), ("-mcpu=native",), ())  # the first the compiler takes; $VITKIT_KERNEL_ARCH replaces
COMPILE_TIMEOUT_S = 120.0
VERSION_TIMEOUT_S = 30.0

_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}
_reasons: dict[str, str] = {}  # why a kernel is not available
_private_tmp: list[Path] = []  # the process's own build folder, when the cache cannot be trusted


def compiler() -> str | None:
    """The C compiler to build with: ``$CC``, else ``cc`` / ``gcc`` / ``clang`` on ``PATH``."""
    cc = c_compiler_name()
    if cc:
        return shutil.which(cc) or cc
    return next((path for name in ("cc", "gcc", "clang") if (path := shutil.which(name))), None)


def unavailable_reason(name: str) -> str | None:
    """Why ``load(name)`` gave None (None while it has not been tried or when it worked)."""
    return _reasons.get(name)


def load(
    name: str, signatures: dict[str, list], selftest: Callable[[ctypes.CDLL], str | None] | None = None
) -> ctypes.CDLL | None:
    """The compiled ``<name>.c`` (built on first use), or None where it cannot be built, loaded or trusted.

    ``signatures``: the C argument types of each function the caller needs (all return int); every one must be in
    the library. ``selftest(lib)`` returns None when the library computes correctly, else what went wrong.
    """
    with _lock:
        if name not in _loaded:
            lib, reason = None, "native kernels need a POSIX system"
            if os.name == "posix":
                lib, reason = _build_and_load(name, signatures, selftest)
            _loaded[name] = lib
            if lib is None:
                _reasons[name] = reason
                warnings.warn(f"vitkit: native kernel {name} not used ({reason}); the PyTorch path runs", stacklevel=3)
        return _loaded[name]


def forget() -> None:
    """Drop what this process has loaded or decided (tests, or after changing ``$CC`` / ``$VITKIT_CACHE``)."""
    with _lock:
        _loaded.clear()
        _reasons.clear()


# --- the cache folder ------------------------------------------------------------------------------
def _unsafe_ancestor(path: Path) -> str | None:
    """Why a folder above the cache could let someone else replace it, or None."""
    uid = os.getuid()
    for parent in path.parents:
        try:
            st = os.stat(parent)
        except OSError as e:
            return f"cannot inspect {parent} ({e.strerror})"
        if st.st_uid not in (uid, 0):
            return f"{parent} belongs to another user (uid {st.st_uid})"
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return f"{parent} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _private_folder_problem(path: Path) -> str | None:
    """None when ``path`` is a real folder of this user that nobody else can write to."""
    try:
        st = os.lstat(path)
    except OSError as e:
        return f"cannot inspect {path} ({e.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a folder"
    if st.st_uid != os.getuid():
        return f"{path} belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return _unsafe_ancestor(path)


def _make_private(path: Path) -> None:
    """Create ``path`` and any missing folder above it, each readable by the user alone."""
    missing = []
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            break
        missing.append(p)
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):
            p.mkdir(mode=0o700)


def trusted_cache() -> tuple[Path | None, str | None]:
    """(the cache folder, None) when it can be trusted, else (None, why not)."""
    try:
        path = kernel_cache_dir()
        _make_private(path)
    except (OSError, VitkitError, RuntimeError) as e:  # RuntimeError: no home folder
        return None, f"cache folder unusable: {e}"
    problem = _private_folder_problem(path)
    return (None, problem) if problem else (path, None)


def _build_folder() -> tuple[Path, str | None]:
    """Where to build and load from: the trusted cache, else this process's private temporary folder."""
    path, problem = trusted_cache()
    if path is not None:
        return path, None
    if not _private_tmp:
        tmp = Path(tempfile.mkdtemp(prefix="vitkit-kernels-"))  # created by us, mode 0700
        atexit.register(shutil.rmtree, tmp, True)
        _private_tmp.append(tmp)
        warnings.warn(
            f"vitkit: not using the kernel cache: {problem}; building in {tmp} for this process", stacklevel=4
        )
    return _private_tmp[0], problem


# --- building --------------------------------------------------------------------------------------
def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess | str:
    """Run ``cmd`` in its own process group; on timeout kill the whole group. Returns the result or an error."""
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as e:
        return f"cannot run {cmd[0]} ({e.strerror or e})"
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"{cmd[0]} did not finish within {timeout:g} s (killed)"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _uses_libgomp() -> bool:
    """Whether this process runs GNU OpenMP (PyTorch's Linux wheels bundle it as ``libgomp.so.1``).

    A kernel built with ``-fopenmp`` needs ``libgomp.so.1``; the dynamic linker hands it the copy already loaded, so
    kernel and PyTorch share one pool of threads (a second pool would fight PyTorch's spinning threads for the cores).
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


def _verified(path: Path) -> bool:
    """A regular file of this user that nobody else can write, whose bytes hash to the end of its name."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            return False
        return sha256_file(path)[:16] == path.stem.rsplit("-", 1)[-1]
    except OSError:
        return False


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _compile(cc: str, args: tuple[str, ...], source: Path, folder: Path, prefix: str) -> Path | str:
    """Build into a temporary file in ``folder``, then rename it to ``<prefix>-<hash>.so``; returns the path."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{prefix}-", suffix=".tmp", dir=folder)
        os.close(fd)
    except OSError as e:
        return f"cannot write to {folder} ({e.strerror or e})"
    tmp_path = Path(tmp)
    try:
        done = _run([cc, *args, "-o", tmp, str(source), "-lpthread"], COMPILE_TIMEOUT_S)
        if isinstance(done, str):
            return done
        if done.returncode != 0:
            return (done.stderr or done.stdout).strip()[-500:] or f"exit status {done.returncode}"
        os.chmod(tmp, 0o700)
        target = folder / f"{prefix}-{sha256_file(tmp_path)[:16]}.so"
        os.replace(tmp, target)
        return target
    except OSError as e:
        return f"{e.strerror or e} ({folder})"
    finally:
        _remove(tmp_path)


def _open(path: Path, signatures: dict[str, list]) -> ctypes.CDLL | str:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        return f"cannot load {path.name} ({e})"
    for symbol, argtypes in signatures.items():
        if not hasattr(lib, symbol):
            return f"{path.name} has no function {symbol}"
        fn = getattr(lib, symbol)
        fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return lib


def _checked(lib: ctypes.CDLL, selftest: Callable[[ctypes.CDLL], str | None] | None) -> tuple[ctypes.CDLL | None, str]:
    problem = selftest(lib) if selftest is not None else None
    return (lib, "") if problem is None else (None, f"self-test failed: {problem}")


def _build_and_load(
    name: str, signatures: dict[str, list], selftest: Callable[[ctypes.CDLL], str | None] | None
) -> tuple[ctypes.CDLL | None, str]:
    source = SOURCE_DIR / f"{name}.c"
    cc = compiler()
    if cc is None:
        return None, "no C compiler found; set $CC"
    version = _run([cc, "--version"], VERSION_TIMEOUT_S)
    if isinstance(version, str) or version.returncode != 0:
        return None, f"C compiler {cc!r} does not run ({version if isinstance(version, str) else 'failed'})"
    folder, _ = _build_folder()
    code = source.read_bytes() + b"".join(h.read_bytes() for h in sorted(SOURCE_DIR.glob("*.h")))
    openmp = ("-fopenmp",) if _uses_libgomp() else ()
    errors = []
    try:
        chosen = kernel_arch_flags()
    except VitkitError as e:
        return None, str(e)
    for flags in ARCH_FLAGS if chosen is None else (chosen,):
        args = ("-O3", *flags, *openmp, "-ffp-contract=fast", "-fPIC", "-shared")
        parts = [code, cc.encode(), version.stdout.encode(), " ".join(args).encode(), _cpu_signature().encode()]
        prefix = f"{name}-{hashlib.sha256(bytes(1).join(parts)).hexdigest()[:16]}"
        for path in sorted(folder.glob(f"{prefix}-*.so")):  # earlier builds of the same source, compiler and CPU
            lib = _open(path, signatures) if _verified(path) else f"{path.name} is damaged or not yours"
            if not isinstance(lib, str):
                return _checked(lib, selftest)
            warnings.warn(f"vitkit: cached kernel {path} not used ({lib}); building it again", stacklevel=4)
            _remove(path)  # never loaded again: built anew below
        built = _compile(cc, args, source, folder, prefix)
        if isinstance(built, str):
            errors.append(f"{cc} {' '.join(args)}: {built}")
            continue
        lib = _open(built, signatures)
        if not isinstance(lib, str):
            return _checked(lib, selftest)
        errors.append(lib)
        _remove(built)
    return None, f"could not build it ({errors[-1] if errors else 'no attempt'})"
