"""Shared helpers: apply a response's JSON Patch (the ``jsonpatch`` library, RFC 6902) and
validate the result offline against the current Kubernetes schemas (``kubernetes-validate``)."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import kubernetes_validate

KUBERNETES = kubernetes_validate.latest_version()


def patched(review: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """The review's object with the answer's patch applied (unchanged without a patch)."""
    obj: dict[str, Any] = review["request"]["object"]
    response = answer["response"]
    if "patch" not in response:
        return obj
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(obj, ops)
    return result


def validate(obj: dict[str, Any]) -> None:
    """Raises kubernetes_validate.ValidationError when ``obj`` is not a valid object."""
    kubernetes_validate.validate(obj, KUBERNETES, strict=True)
