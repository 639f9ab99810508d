import contextlib

import pytest

pytest.importorskip("starlette", reason="the serving tests need the serve extra: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="the serving tests need the serve extra: pip install -e '.[serve]'")
pytest.importorskip("python_multipart", reason="the serving tests need the serve extra: pip install -e '.[serve]'")

from tests.serve.helpers import started_client, tiny_model


@pytest.fixture(scope="package")
def model():
    return tiny_model()


@pytest.fixture
def make_client(model):
    """``make_client(backend=None, **config)`` -> a ready TestClient of a server with that ServeConfig."""
    from vitkit.serve.app import create_app
    from vitkit.serve.backend import make_backend
    from vitkit.serve.config import ServeConfig

    with contextlib.ExitStack() as stack:

        def make(backend=None, **config):
            app = create_app(backend or make_backend(model), ServeConfig(**config))
            return stack.enter_context(started_client(app))

        yield make


@pytest.fixture
def client(make_client):
    return make_client()
