"""The API's OpenAPI 3.1 document (``GET /openapi.json``), written out so it says exactly what the server does."""

from typing import Any

from vitkit.serve.explain import DEFAULT_METHOD
from vitkit.version import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


IMAGE_BODY = {
    "required": True,
    "description": "Images as file parts of a multipart form (any field name), or one image as the raw body.",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}

REFUSALS = {
    "400": _error("Malformed request: no image, a text field, too many files, a bad query parameter."),
    "413": _error("Body over the server's --max-body-mb."),
    "415": _error("Content-Type is neither multipart/form-data nor image/* nor application/octet-stream."),
    "422": _error("A file is not a usable image: not an image, truncated, over the pixel limit, extreme aspect ratio."),
    "503": {
        **_error("The queue is full or the server is shutting down; retry after Retry-After seconds."),
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}

SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Class": {
        "type": "object",
        "properties": {
            "class": {"type": "integer"},
            "name": {"type": "string"},
            "probability": {"type": "number"},
        },
    },
    "Prediction": {
        "type": "object",
        "properties": {
            "file": {"type": "string", "description": "the part's file name, or 'the request body'"},
            "topk": {"type": "array", "items": _ref("Class")},
        },
    },
    "PredictResponse": {
        "type": "object",
        "properties": {
            "model": {"type": "string"},
            "predictions": {"type": "array", "items": _ref("Prediction")},
            "latency_ms": {"type": "number", "description": "time spent in the server on this request"},
        },
    },
    "Model": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "family": {"type": "string", "enum": ["vit", "swin", "cvt"]},
            "num_classes": {"type": "integer"},
            "classes": {"type": "array", "items": {"type": "string"}},
            "input_size": {"type": "array", "items": {"type": "integer"}, "description": "[C, H, W]"},
            "mean": {"type": "array", "items": {"type": "number"}},
            "std": {"type": "array", "items": {"type": "number"}},
            "interpolation": {"type": "string"},
            "crop_pct": {"type": "number"},
            "parameters": {"type": "integer"},
            "backend": {"type": "string", "enum": ["torch", "onnx"]},
            "device": {"type": "string"},
            "vitkit_version": {"type": "string"},
            "limits": {"type": "object", "additionalProperties": {"type": "number"}},
            "explain_available": {"type": "boolean"},
        },
    },
    "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
}


def openapi_document(model: dict[str, Any]) -> dict[str, Any]:
    """The document for a server of ``model`` (its ``GET /v1/model`` description)."""
    topk = {
        "name": "topk",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1},
        "description": "classes per image (default: the server's --topk; capped at the number of classes)",
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vitkit serve",
            "version": __version__,
            "description": f"Image classification with {model['name']} ({model['family']}, "
            f"{model['num_classes']} classes). Errors are JSON objects with one 'error' line.",
        },
        "paths": {
            "/v1/predict": {
                "post": {
                    "summary": "Top-k classes for one or more images",
                    "parameters": [topk],
                    "requestBody": IMAGE_BODY,
                    "responses": {
                        "200": _json(_ref("PredictResponse"), "One prediction per image, in order."),
                        **REFUSALS,
                    },
                }
            },
            "/v1/explain": {
                "post": {
                    "summary": "The explanation overlay of one image, as PNG",
                    "parameters": [
                        {
                            "name": "method",
                            "in": "query",
                            "schema": {"type": "string", "default": DEFAULT_METHOD},
                        },
                        {
                            "name": "target",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "class index or name (default: the predicted class)",
                        },
                    ],
                    "requestBody": IMAGE_BODY,
                    "responses": {
                        "200": {"description": "PNG", "content": {"image/png": {}}},
                        **REFUSALS,
                        "501": _error("This vitkit has no vitkit.explanations."),
                    },
                }
            },
            "/v1/model": {"get": {"summary": "The model", "responses": {"200": _json(_ref("Model"), "The model.")}}},
            "/healthz": {"get": {"summary": "The process is alive", "responses": {"200": _json(_ref("Status"), "ok")}}},
            "/readyz": {
                "get": {
                    "summary": "Ready: the model is loaded and a warm-up batch ran",
                    "responses": {"200": _json(_ref("Status"), "ready"), "503": _json(_ref("Status"), "not yet")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text format 0.0.4", "content": {"text/plain": {}}}},
                }
            },
            "/": {"get": {"summary": "The web page", "responses": {"200": {"description": "HTML"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "JSON"}}}},
        },
        "components": {"schemas": SCHEMAS},
    }
