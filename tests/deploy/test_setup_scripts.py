"""The setup scripts the Makefile runs: sound shell, and the runtime's needs no root."""

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.manifests import tool

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [*sorted((ROOT / "scripts").glob("*.sh")), ROOT / ".ci" / "run"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_the_script_passes_shellcheck(script: Path) -> None:
    result = subprocess.run(
        [tool("shellcheck") or "shellcheck", str(script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_make_run_installs_without_root() -> None:
    """`make install` (run by `make run`) is scripts/setup.sh alone: no system packages, no
    sudo, no global npm install; the test tooling is scripts/setup-test.sh's."""
    runtime = (ROOT / "scripts" / "setup.sh").read_text()
    assert not re.search(r"\b(apt-get|sudo|as_root)\b|npm install (-g|--global)", runtime)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^install:.*\n\tscripts/setup\.sh$", makefile, re.MULTILINE)
    assert re.search(r"^run: install\b", makefile, re.MULTILINE)
    assert "chromium" in (ROOT / "scripts" / "setup-test.sh").read_text()
