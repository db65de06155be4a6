"""The optional extras of the `esi-ecg` distribution: a command that needs one says which, before it starts.

The requirements of each extra are read from their one declaration: the checkout's pyproject.toml when the package
runs from a source tree (an editable install's metadata is only as new as its last `pip install`), else the
installed distribution's metadata.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

DISTRIBUTION = "esi-ecg"
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([\w.-]+)["']""")


def _declared_requirements(distribution: str) -> list[str]:
    """Every requirement line of the distribution, extras marked as in its metadata (`name; extra == "x"`)."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file() and sys.version_info >= (3, 11):  # tomllib; Python 3.10 reads the installed metadata
        import tomllib

        project = tomllib.loads(pyproject.read_text()).get("project", {})
        if project.get("name") == distribution:
            extras = project.get("optional-dependencies", {})
            return [f'{line}; extra == "{extra}"' for extra, lines in extras.items() for line in lines]
    try:
        return importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return []


def extra_requirements(extra: str, distribution: str = DISTRIBUTION) -> list[str]:
    """The distributions `extra` requires (nested extras of the distribution itself expanded); [] when it is not
    declared."""
    from packaging.requirements import Requirement

    found = []
    for line in _declared_requirements(distribution):
        marker = _EXTRA_MARKER.search(line)
        if not marker or marker.group(1) != extra:
            continue
        requirement = Requirement(line)
        if requirement.name == distribution:
            for nested in sorted(requirement.extras):
                found += extra_requirements(nested, distribution)
        else:
            found.append(requirement.name)
    return list(dict.fromkeys(found))


def missing_requirements(extra: str) -> list[str]:
    """The distributions of `extra` that are not installed."""
    missing = []
    for name in extra_requirements(extra):
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def require_extra(command: str, extra: str) -> None:
    """Exit with one sentence naming the extra (and what of it is missing) when `command` cannot run without it."""
    missing = missing_requirements(extra)
    if missing:
        raise SystemExit(
            f"{command} needs the [{extra}] extra, which is not installed (missing: {', '.join(missing)}). "
            f"Install it with: pip install '{DISTRIBUTION}[{extra}]'"
        )
