"""Custom resources (Kubeflow Trainer v2, Kueue, KubeRay) validated offline against the CRD schemas
kept in k8s/crds (openAPIV3Schema of each CRD's storage version, from the releases named in its
README).

The API server prunes fields a structural schema does not name and `kubectl apply` rejects them
(strict field validation); here every object schema without `additionalProperties` or
`x-kubernetes-preserve-unknown-fields` is closed the same way, so a misspelt field fails. CEL
rules (`x-kubernetes-validations`) are not evaluated; the tests check the ones that matter to
the launcher (the TrainJob name) themselves.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import jsonschema

CRDS = Path(__file__).resolve().parent.parent / "k8s" / "crds"
#: Kinds whose CRD has scope Cluster (the others are Namespaced).
CLUSTER_SCOPED = {"ClusterTrainingRuntime", "ClusterQueue", "ResourceFlavor"}


def _closed(schema: dict) -> dict:
    if not isinstance(schema, dict):
        return schema
    schema = {k: ([_closed(i) for i in v] if isinstance(v, list) else _closed(v) if isinstance(v, dict) and k != "properties" else v)
              for k, v in schema.items()}
    if "properties" in schema:
        schema["properties"] = {name: _closed(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    return schema


@cache
def validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    """The validator of `kind` in `api_version`. Raises FileNotFoundError for a kind not kept."""
    group, version = api_version.split("/")
    path = CRDS / f"{group}_{kind.lower()}s.{version}.json"
    if not path.exists():
        raise FileNotFoundError(f"no CRD schema for {kind} ({api_version}) in {CRDS}")
    return jsonschema.Draft7Validator(_closed(json.loads(path.read_text())))


def is_custom(document: dict) -> bool:
    return document.get("apiVersion", "").split("/")[0] in ("trainer.kubeflow.org", "kueue.x-k8s.io", "ray.io")


def validate_custom(document: dict) -> None:
    """Raises jsonschema.ValidationError (the deepest error first) or AssertionError (metadata)."""
    errors = sorted(validator(document["apiVersion"], document["kind"]).iter_errors(document), key=lambda e: -len(e.absolute_path))
    if errors:
        raise errors[0]
    metadata = document["metadata"]
    assert metadata.get("name"), "metadata.name is required"
    if document["kind"] in CLUSTER_SCOPED:
        assert "namespace" not in metadata, f"{document['kind']} is cluster-scoped: no metadata.namespace"
