"""Every YAML file of the repository parses (kustomize and Compose read them all)."""

import pytest
import yaml
from manifests import REPO, repo_files


def yaml_files() -> list[str]:
    return sorted(f for f in repo_files() if f.endswith((".yaml", ".yml")) and (REPO / f).exists())


def test_the_deployment_files_are_found() -> None:
    found = yaml_files()
    assert "compose.yaml" in found
    assert "deploy/k8s/base/kustomization.yaml" in found
    assert "deploy/k8s/minio/values.yaml" in found


@pytest.mark.parametrize("path", yaml_files())
def test_parses(path: str) -> None:
    documents = [d for d in yaml.safe_load_all((REPO / path).read_text()) if d is not None]
    assert documents, f"{path} holds no document"
    assert all(isinstance(d, dict) for d in documents), path
