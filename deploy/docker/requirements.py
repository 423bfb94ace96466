"""Print pyproject.toml's requirements, one a line, for the image's dependency layer.

The Dockerfile installs these before it copies the source, so editing the code does not
reinstall torch. `--extra worker` adds that extra; `--only torch` / `--except torch` filter by
distribution name, so torch can come from its own index (TORCH_INDEX_URL) and the rest from PyPI.
"""

import argparse
import re
import tomllib
from pathlib import Path


def distribution(requirement: str) -> str:
    """The normalised distribution name of a PEP 508 requirement string."""
    return re.split(r"[\s\[<>=!~;@]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--extra", action="append", default=[], help="optional extra to add")
    names = parser.add_mutually_exclusive_group()
    names.add_argument("--only", action="append", default=[], help="keep only these names")
    names.add_argument("--except", dest="drop", action="append", default=[], help="drop these")
    args = parser.parse_args()

    project = tomllib.loads(args.pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in args.extra:
        requirements += project["optional-dependencies"][extra]
    for requirement in requirements:
        name = distribution(requirement)
        if (args.only and name not in args.only) or name in args.drop:
            continue
        print(requirement)


if __name__ == "__main__":
    main()
