"""Building and loading native kernels: a trusted private cache, verified files, no stalls, nothing half-written.

Every test uses its own cache folder and forgets what the process loaded before and after.
"""

import os
import shutil
import stat
import subprocess
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from vitkit import kernels
from vitkit.kernels import attention as native_attention
from vitkit.kernels import library
from vitkit.kernels import window_attention as native_window
from vitkit.utils.io import sha256_file

needs_cc = pytest.mark.skipif(kernels.compiler() is None, reason="no C compiler")


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """An empty private cache folder; returns the folder the kernels go to."""
    root = tmp_path / "cache"
    monkeypatch.setenv("VITKIT_CACHE", str(root))
    kernels.forget()
    yield root / "kernels"
    kernels.forget()


def built(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f"{name}-*.so"))


@needs_cc
def test_builds_into_a_private_folder_and_names_files_by_their_hash(cache):
    assert native_window.library() is not None and native_attention.library() is not None
    for name in ("window_attention", "attention"):
        (path,) = built(cache, name)
        assert library._verified(path)
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert not list(cache.glob("*.tmp")) and not list(cache.glob(".*"))


@needs_cc
def test_a_built_kernel_is_reused(cache, monkeypatch):
    assert native_attention.library() is not None
    kernels.forget()
    monkeypatch.setattr(library, "_compile", lambda *a: pytest.fail("compiled again"))
    assert native_attention.library() is not None


@pytest.mark.parametrize("cc", ["/nonexistent/cc", "false"])
def test_a_broken_compiler_warns_and_leaves_nothing(cache, monkeypatch, cc):
    monkeypatch.setenv("CC", cc)
    with pytest.warns(UserWarning, match="PyTorch path runs"):
        assert native_window.library() is None
    assert kernels.unavailable_reason("window_attention")
    assert not cache.exists() or not list(cache.iterdir())  # no library, no temporary file


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_a_hung_compiler_is_killed_with_its_children(cache, monkeypatch, tmp_path):
    pidfile = tmp_path / "child.pid"
    cc = tmp_path / "hung-cc"
    cc.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = "--version" ]; then echo "fake cc 1.0"; exit 0; fi
        sleep 300 &
        echo $! > {pidfile}
        sleep 300
        """)
    )
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setattr(library, "COMPILE_TIMEOUT_S", 1.0)
    start = time.monotonic()
    with pytest.warns(UserWarning, match="did not finish"):
        assert native_attention.library() is None
    assert time.monotonic() - start < 30  # one timeout per -march variant, never 300 s
    child = int(pidfile.read_text())
    for _ in range(50):  # SIGKILL is asynchronous
        if not _alive(child):
            break
        time.sleep(0.1)
    assert not _alive(child), "the compiler's child process was left running"


@needs_cc
def test_a_truncated_cached_kernel_is_rebuilt_not_loaded(cache):
    assert native_attention.library() is not None
    (path,) = built(cache, "attention")
    data = path.read_bytes()
    damaged = path.with_name("damaged")
    damaged.write_bytes(data[: len(data) // 2])  # what a full disk or a killed copy leaves
    os.replace(damaged, path)  # a new file: this process still maps the old one
    kernels.forget()
    with pytest.warns(UserWarning, match="building it again"):
        lib = native_attention.library()
    assert lib is not None
    (again,) = built(cache, "attention")
    assert library._verified(again) and again.stat().st_size == len(data)


@needs_cc
def test_a_library_without_the_expected_symbol_is_not_used(cache):
    with pytest.warns(UserWarning, match="has no function vk_missing"):
        assert library.load("attention", {"vk_missing": []}) is None
    assert "vk_missing" in kernels.unavailable_reason("attention")


@needs_cc
def test_a_library_that_fails_its_self_test_is_not_used(cache):
    with pytest.warns(UserWarning, match="self-test failed: wrong numbers"):
        assert library.load("attention", {}, lambda lib: "wrong numbers") is None


def _plant_library(folder: Path, prefix: str, marker: Path) -> Path:
    """A shared library that writes ``marker`` when it is loaded, named like a genuine build of ``prefix``."""
    src = folder.parent / "planted.c"
    src.write_text(
        "#include <stdio.h>\n__attribute__((constructor)) static void planted(void) {"
        f' FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n'
        "int vk_attention(void) { return 0; }\n"
    )
    tmp = folder / "planted.so"
    subprocess.run([kernels.compiler(), "-shared", "-fPIC", "-o", str(tmp), str(src)], check=True)
    target = folder / f"{prefix}-{sha256_file(tmp)[:16]}.so"  # a valid hash: integrity is not trust
    tmp.rename(target)
    return target


@needs_cc
def test_a_cache_others_can_write_to_is_not_used(cache, tmp_path):
    """Another user could have put a library there: it is never loaded; the kernel is built privately."""
    assert native_attention.library() is not None
    (genuine,) = built(cache, "attention")
    prefix = genuine.name.rsplit("-", 1)[0]
    genuine.unlink()
    marker = tmp_path / "planted-library-ran"
    _plant_library(cache, prefix, marker)
    cache.chmod(0o777)  # world-writable, no sticky bit
    kernels.forget()
    with pytest.warns(UserWarning, match="writable by other users"):
        assert native_attention.library() is not None
    assert not marker.exists()
    private = library._private_tmp[0]
    assert built(private, "attention") and stat.S_IMODE(private.stat().st_mode) == 0o700


@needs_cc
def test_a_damaged_or_foreign_file_in_a_private_cache_is_removed(cache, tmp_path):
    assert native_attention.library() is not None
    (genuine,) = built(cache, "attention")
    prefix = genuine.name.rsplit("-", 1)[0]
    genuine.unlink()
    marker = tmp_path / "planted-library-ran"
    planted = _plant_library(cache, prefix, marker)
    wrong = planted.with_name(f"{prefix}-{'0' * 16}.so")  # content that does not match its name
    planted.rename(wrong)
    kernels.forget()
    with pytest.warns(UserWarning, match="building it again"):
        assert native_attention.library() is not None
    assert not marker.exists() and not wrong.exists()


def test_a_symlinked_or_relative_cache_is_refused(monkeypatch, tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "link"))
    (real / "kernels").mkdir(mode=0o700)
    path, problem = library.trusted_cache()
    assert path is not None  # a symlink above the cache folder is fine when it is the user's
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "via"))
    (tmp_path / "via").mkdir(mode=0o700)
    (tmp_path / "via" / "kernels").symlink_to(real / "kernels", target_is_directory=True)
    path, problem = library.trusted_cache()
    assert path is None and "symbolic link" in problem
    monkeypatch.setenv("VITKIT_CACHE", "relative/cache")
    path, problem = library.trusted_cache()
    assert path is None and "not an absolute path" in problem


def test_a_relative_xdg_cache_home_is_ignored(monkeypatch, tmp_path):
    monkeypatch.delenv("VITKIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    monkeypatch.setenv("HOME", str(tmp_path))
    from vitkit.settings import kernel_cache_dir

    assert kernel_cache_dir() == tmp_path / ".cache" / "vitkit" / "kernels"


@pytest.mark.skipif(os.getuid() != 0 or shutil.which("chown") is None, reason="needs root to own files as another user")
def test_a_cache_owned_by_another_user_is_refused(cache):
    cache.mkdir(parents=True, mode=0o700)
    os.chown(cache, 65534, 65534)
    path, problem = library.trusted_cache()
    assert path is None and "another user" in problem


def test_missing_folders_are_created_private(monkeypatch, tmp_path):
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "a" / "b"))
    old = os.umask(0o002)  # a permissive umask must not leak into the cache
    try:
        path, problem = library.trusted_cache()
    finally:
        os.umask(old)
    assert problem is None and path == tmp_path / "a" / "b" / "kernels"
    for p in (tmp_path / "a", tmp_path / "a" / "b", path):
        assert stat.S_IMODE(p.stat().st_mode) == 0o700


def test_kernels_are_optional_everywhere(cache, monkeypatch):
    """Without a compiler nothing fails: a warning, and None for every kernel."""
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert native_attention.library() is None and native_window.library() is None
    assert len(caught) == 2 and all("PyTorch path" in str(w.message) for w in caught)


@needs_cc
def test_kernel_arch_builds_with_the_given_target_flags(cache, monkeypatch):
    """``$VITKIT_KERNEL_ARCH`` replaces ``-march=native``: the build that stands in for an AVX2-only CPU."""
    if os.uname().machine != "x86_64":
        pytest.skip("x86-64 target flags")
    calls = []
    real = library._compile
    monkeypatch.setattr(library, "_compile", lambda cc, args, *rest: calls.append(args) or real(cc, args, *rest))
    monkeypatch.setenv("VITKIT_KERNEL_ARCH", "-march=x86-64-v3")
    lib = native_window.library()
    assert lib is not None and len(calls) == 1 and "-march=x86-64-v3" in calls[0] and "-march=native" not in calls[0]
    (path,) = built(cache, "window_attention")
    if shutil.which("objdump"):  # no AVX-512 registers in an x86-64-v3 build
        assert "zmm" not in subprocess.run(["objdump", "-d", str(path)], capture_output=True, text=True).stdout
    kernels.forget()
    monkeypatch.delenv("VITKIT_KERNEL_ARCH")
    assert native_window.library() is not None and len(calls) == 2  # a native build is a different file
    assert len(built(cache, "window_attention")) == 2


def test_kernel_arch_takes_only_target_flags(cache, monkeypatch):
    monkeypatch.setenv("VITKIT_KERNEL_ARCH", "-march=x86-64-v3 -o /tmp/elsewhere")
    monkeypatch.setattr(library, "_compile", lambda *a: pytest.fail("compiled"))
    with pytest.warns(UserWarning, match="VITKIT_KERNEL_ARCH=.*'-o'"):
        assert native_window.library() is None
    assert "only target flags" in kernels.unavailable_reason("window_attention")
