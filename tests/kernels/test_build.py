"""Building and loading native kernels: cached per source / compiler / CPU, never half-written, optional."""

import warnings

import pytest
import torch

import vitkit
import vitkit.kernels as kernels
from vitkit.kernels import attention as native_attention
from vitkit.kernels import window_attention as native


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty build cache and nothing loaded yet."""
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "_loaded", {})
    return tmp_path / "kernels"


def test_kernel_builds_where_a_compiler_is(fresh):
    if kernels.compiler() is None:  # then the models must still run: test_models_fall_back_without_the_kernel
        with pytest.warns(UserWarning, match="no C compiler"):
            assert native.library() is None
        return
    assert native.library() is not None and native_attention.library() is not None
    for name in ("window_attention", "attention"):
        assert len(list(fresh.glob(f"{name}-*.so"))) == 1
    assert not list(fresh.glob("*.tmp"))


def test_a_built_kernel_is_reused(fresh, monkeypatch):
    if kernels.compiler() is None:
        pytest.skip("no C compiler")
    assert kernels.load("window_attention") is not None
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setattr(kernels, "_compile", lambda *a: pytest.fail("compiled again"))
    assert kernels.load("window_attention") is not None


@pytest.mark.parametrize("cc", ["/nonexistent/cc", "false"])
def test_a_broken_compiler_warns_and_leaves_nothing(fresh, monkeypatch, cc):
    monkeypatch.setenv("CC", cc)
    with pytest.warns(UserWarning, match="PyTorch path"):
        assert native.library() is None
    assert not fresh.exists() or not list(fresh.iterdir())  # no library, no temporary file


def test_switched_off_by_the_environment(fresh, monkeypatch):
    monkeypatch.setenv("VITKIT_NATIVE", "0")
    monkeypatch.setattr(kernels, "_compile", lambda *a: pytest.fail("compiled while switched off"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.library() is None


@pytest.mark.parametrize(
    "name, kw, module",
    [
        ("swin_tiny_patch4_window7_224", dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2)), native),
        ("vit_base_patch16_224", dict(embed_dim=64, depth=2, num_heads=2, img_size=64), native_attention),
    ],
)
def test_models_fall_back_without_the_kernel(fresh, monkeypatch, name, kw, module):
    model = vitkit.create_model(name, **kw).eval()
    x = torch.randn(1, 3, 64, 64)
    monkeypatch.setenv("VITKIT_NATIVE", "0")
    with torch.no_grad():
        plain = model(x)
    assert module.library() is None and not kernels._loaded  # refused before building: the PyTorch path ran
    monkeypatch.delenv("VITKIT_NATIVE")
    with torch.no_grad():
        fast = model(x)
    assert module.library() is not None or kernels.compiler() is None
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
