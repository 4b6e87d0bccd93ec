"""requirements.lock agrees with pyproject.toml, and the running environment was installed from it.

`make install` installs only the lock (hashes required, no resolution), so a dependency added to
or changed in pyproject.toml without `make lock` would otherwise go unnoticed until someone's
fresh install broke; these tests fail instead.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
LOCK = REPO / "requirements.lock"

# Installed from the lock though pyproject's dependencies do not name it: the installer itself
# (`make lock` adds it beside the build backend).
LOCKED_TOOLS: tuple[NormalizedName, ...] = (canonicalize_name("pip"),)


@dataclass(frozen=True)
class Pin:
    name: NormalizedName
    version: Version
    hashes: tuple[str, ...]
    line: str


def parse_lock(text: str) -> dict[NormalizedName, Pin]:
    """The lock's entries, by normalised name: `name==version \\ --hash=sha256:… …` each."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        continued = line.endswith("\\")
        current += " " + line.rstrip("\\").strip()
        if not continued:
            logical.append(current.strip())
            current = ""
    if current.strip():
        logical.append(current.strip())

    pins: dict[NormalizedName, Pin] = {}
    for line in logical:
        words = line.split()
        hashes = tuple(w.removeprefix("--hash=") for w in words if w.startswith("--hash="))
        requirement_text = " ".join(w for w in words if not w.startswith("--hash="))
        assert not requirement_text.startswith("-"), f"an option in the lock: {line!r}"
        requirement = Requirement(requirement_text)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", (
            f"not pinned to one exact version: {requirement_text!r}"
        )
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{name} is in the lock twice"
        pins[name] = Pin(name, Version(specifiers[0].version), hashes, line)
    return pins


def pyproject_requirements() -> list[Requirement]:
    """[project] dependencies, the dev extra, and the build backend (used without isolation)."""
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    texts: list[str] = [
        *data["project"]["dependencies"],
        *data["project"]["optional-dependencies"]["dev"],
        *data["build-system"]["requires"],
    ]
    return [Requirement(text) for text in texts]


@pytest.fixture(scope="module")
def pins() -> dict[NormalizedName, Pin]:
    return parse_lock(LOCK.read_text(encoding="utf-8"))


def unmet(requirements: list[Requirement], pins: dict[NormalizedName, Pin]) -> list[str]:
    problems: list[str] = []
    for requirement in requirements:
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{requirement} is locked at {pin.version}")
    return problems


def wanted_for(dependency: Requirement, extra: str) -> bool:
    """Whether a package's dependency applies here: without extras (`extra` empty), or only
    because of `extra`."""
    marker = dependency.marker
    if not extra:
        return marker is None or marker.evaluate({"extra": ""})
    return (
        marker is not None and marker.evaluate({"extra": extra}) and not wanted_for(dependency, "")
    )


@pytest.mark.core
def test_it_pins_every_pyproject_requirement_within_its_range(
    pins: dict[NormalizedName, Pin],
) -> None:
    assert unmet(pyproject_requirements(), pins) == [], "run `make lock`"


@pytest.mark.core
def test_it_pins_the_installer(pins: dict[NormalizedName, Pin]) -> None:
    assert [tool for tool in LOCKED_TOOLS if tool not in pins] == []


@pytest.mark.core
def test_it_has_a_sha256_hash_on_every_pin(pins: dict[NormalizedName, Pin]) -> None:
    assert pins, "the lock is empty"
    unhashed = [
        pin.line for pin in pins.values() if not any(h.startswith("sha256:") for h in pin.hashes)
    ]
    assert unhashed == []


@pytest.mark.core
def test_it_pins_what_every_locked_package_requires(pins: dict[NormalizedName, Pin]) -> None:
    """The lock is closed: following each requirement (with the extras asked for) from pyproject
    through the installed packages' metadata, for this interpreter, never leaves the lock."""
    seen: set[tuple[NormalizedName, str]] = set()
    todo: list[tuple[Requirement, str]] = [(r, "pyproject.toml") for r in pyproject_requirements()]
    problems: list[str] = []
    while todo:
        requirement, wanted_by = todo.pop()
        name = canonicalize_name(requirement.name)
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{wanted_by} requires {requirement}, which is not in the lock")
            continue
        if not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{wanted_by} requires {requirement}; the lock has {pin.version}")
        for extra in ("", *sorted(requirement.extras)):
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            try:
                requires = metadata.requires(name) or []
            except metadata.PackageNotFoundError:
                problems.append(f"{name} is locked but not installed (run `make install`)")
                break
            for text in requires:
                dependency = Requirement(text)
                if wanted_for(dependency, extra):
                    todo.append((dependency, f"{name}[{extra}]" if extra else name))
    assert problems == [], "run `make lock`"


@pytest.mark.core
def test_it_runs_on_the_locked_versions(pins: dict[NormalizedName, Pin]) -> None:
    """What pyproject names is installed at exactly the lock's version (an install that went
    around the lock, `pip install -e .` say, fails here)."""
    names = {canonicalize_name(r.name) for r in pyproject_requirements()} | set(LOCKED_TOOLS)
    wrong: list[str] = []
    for name in sorted(names):
        pin = pins.get(name)
        if pin is None:
            continue  # reported by the pyproject test
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}: not installed, locked at {pin.version}")
            continue
        if installed != pin.version:
            wrong.append(f"{name}: {installed} installed, locked at {pin.version}")
    assert wrong == [], "run `make install`"


@pytest.mark.core
def test_it_reads_a_lock_and_finds_what_pyproject_lacks() -> None:
    lock = parse_lock(
        "# comment\n"
        "django==5.2.19 \\\n"
        "    --hash=sha256:aa \\\n"
        "    --hash=sha256:bb\n"
        "    # via llm-proxy (pyproject.toml)\n"
        "Zope.Interface==8.7 --hash=sha256:cc\n"
    )
    assert sorted(lock) == ["django", "zope-interface"]
    assert lock[canonicalize_name("Django")].hashes == ("sha256:aa", "sha256:bb")
    wanted = [
        Requirement("Django~=5.2.0"),
        Requirement("httpx~=0.28.1"),
        Requirement("zope.interface>9"),
    ]
    assert unmet(wanted, lock) == [
        "httpx~=0.28.1 is not in the lock",
        "zope.interface>9 is locked at 8.7",
    ]
    with pytest.raises(AssertionError, match="not pinned"):
        parse_lock("django>=5.2 --hash=sha256:aa\n")
