"""Every YAML file of the repository parses (kustomize and Compose read them all)."""

import subprocess

import pytest
import yaml
from manifests import REPO


def yaml_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sorted(f for f in listed if f.endswith((".yaml", ".yml")) and (REPO / f).exists())


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
