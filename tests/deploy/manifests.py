"""Validation of the deploy manifests as an API server would: Kubernetes' own kinds against Kubernetes'
OpenAPI schemas (the kubernetes-validate package), the RayJob against KubeRay's CustomResourceDefinition
(vendored in schemas/, see its SOURCE.md), unknown fields rejected everywhere."""

from __future__ import annotations

import copy
import gzip
import os

import kubernetes_validate
import yaml
from jsonschema import Draft7Validator

KUBERNETES_VERSION = "1.34.0"  # the kubectl image of cronjob.yaml; KubeRay 1.7 supports 1.25 and newer
CRDS = {("ray.io/v1", "RayJob"): os.path.join(os.path.dirname(__file__), "schemas", "kuberay-v1.7.0", "ray.io_rayjobs.yaml.gz")}


def strict(schema: dict) -> dict:
    """A CRD's openAPIV3Schema as JSON Schema that rejects unknown fields (an API server prunes them,
    or refuses them with fieldValidation=Strict): every object with declared properties gets
    additionalProperties: false, unless the CRD preserves unknown fields there."""
    schema = copy.deepcopy(schema)

    def visit(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def crd_schema(api_version: str, kind: str) -> dict:
    with gzip.open(CRDS[(api_version, kind)], "rt") as handle:
        crd = yaml.safe_load(handle)
    version = api_version.split("/")[1]
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return strict(served["schema"]["openAPIV3Schema"])


def problems(document: dict) -> list[str]:
    """Every schema violation of one manifest (empty: valid)."""
    key = (document.get("apiVersion"), document.get("kind"))
    if key in CRDS:
        found = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in Draft7Validator(crd_schema(*key)).iter_errors(document)]
        # The pod templates inside are core types: the CRD copies their schema; check them with Kubernetes' own too.
        for path, template in pod_templates(document):
            found += [f"{path}: {p}" for p in problems({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template})]
        return found
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'/'.join(map(str, error.path))}: {error.message}"]
    return []


def pod_templates(rayjob: dict) -> list[tuple[str, dict]]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    found = [("headGroupSpec", cluster["headGroupSpec"]["template"])]
    found += [(f"workerGroupSpecs/{g['groupName']}", g["template"]) for g in cluster.get("workerGroupSpecs", [])]
    return found


def load(path: str) -> list[dict]:
    with open(path) as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]
