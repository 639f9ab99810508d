"""``vitkit serve``: one model behind an HTTP API with dynamic batching, metrics and a web page.

Built on Starlette + uvicorn + python-multipart, the optional ``serve`` extra (``pip install 'vitkit[serve]'``); this
module imports none of them, so ``vitkit`` itself works without the extra. The parts, one job each:

* ``config.py``   the limits and batching settings, validated in one place
* ``backend.py``  the model behind the API (PyTorch or onnxruntime) and what ``GET /v1/model`` says about it
* ``uploads.py``  request bodies -> decoded, checked, preprocessed images (every rejection names the file and limit)
* ``batcher.py``  dynamic batching: concurrent images grouped into one forward pass, off the event loop
* ``metrics.py``  Prometheus text exposition
* ``explain.py``  the one call into ``vitkit.explanations`` (an overlay PNG), 501 while that is not installed
* ``openapi.py``  the API's OpenAPI document
* ``app.py``      the Starlette application: routes, errors as JSON, warm-up and drain
* ``server.py``   listening socket + uvicorn, SIGTERM drains in-flight requests and exits 0
* ``static/index.html``  the page at ``/`` (self-contained: no network assets)
"""

import importlib.util

from vitkit.errors import VitkitError

REQUIRED = {"starlette": "starlette", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}


def require_extra() -> None:
    """Fail with one line naming the extra when a package of the serving stack is missing."""
    missing = [pkg for module, pkg in REQUIRED.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise VitkitError(f"vitkit serve needs {', '.join(missing)}: pip install 'vitkit[serve]'")


__all__ = ["REQUIRED", "require_extra"]
