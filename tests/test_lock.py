"""requirements.lock pins what pyproject.toml asks for, so the two cannot drift.

The Makefile installs the lock with ``pip install --no-deps`` (no resolver), so a dependency added
to pyproject.toml but not re-locked would silently be missing from every fresh ``.venv``. These
tests read both files (pure Python, no network) and fail with "run `make lock`" when they disagree.
"""

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
MAKEFILE = ROOT / "Makefile"
# The extras the lock covers (the Makefile installs runtime + these).
LOCKED_EXTRAS = ("test", "bench")
# The lock is resolved for this target (make lock: --python-version 3.11, linux x86_64).
TARGET = {
    **default_environment(),
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
}
RELOCK = "pyproject.toml and requirements.lock disagree: run `make lock` and commit both"


def parse_lock(text):
    """[(canonical name, version, line number)] of the lock's `name==version` lines."""
    pins = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==" and "*" not in spec[0].version, (
            f"requirements.lock:{number}: {raw!r} is not an exact `name==version` pin"
        )
        assert req.url is None and not req.marker, f"requirements.lock:{number}: {raw!r} must be a plain pin"
        pins.append((canonicalize_name(req.name), Version(spec[0].version), number))
    return pins


def lock_pins():
    return {name: version for name, version, _ in parse_lock(LOCK.read_text())}


def project_requirements():
    """The requirements of [project].dependencies and the locked extras, markers evaluated."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    strings = list(project["dependencies"])
    for extra in LOCKED_EXTRAS:
        strings += project["optional-dependencies"][extra]
    reqs = [Requirement(s) for s in strings]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({**TARGET, "extra": ""})]


def unsatisfied(reqs, pins):
    """Messages for the requirements that no pin of the lock satisfies."""
    problems = []
    for req in reqs:
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req} is not pinned in requirements.lock")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req} is not satisfied by the lock's {name}=={pins[name]}")
    return problems


def test_lock_has_one_exact_pin_per_name():
    pins = parse_lock(LOCK.read_text())
    assert len(pins) > 50, "requirements.lock looks empty"
    seen = {}
    for name, _, number in pins:
        assert name not in seen, (
            f"{name} is pinned twice in requirements.lock (lines {seen[name]} and {number})"
        )
        seen[name] = number


def test_every_project_requirement_is_satisfied_by_a_pin():
    reqs = project_requirements()
    assert any(canonicalize_name(r.name) == "ray" for r in reqs)
    problems = unsatisfied(reqs, lock_pins())
    assert not problems, RELOCK + ":\n  " + "\n  ".join(problems)


def test_lock_pins_the_torch_builds_the_makefile_names():
    match = re.search(r"^TORCH_PINS\s*:=\s*(.+)$", MAKEFILE.read_text(), re.MULTILINE)
    assert match, "Makefile has no TORCH_PINS line"
    pins = lock_pins()
    for pin in match.group(1).split():
        req = Requirement(pin)
        assert pins.get(canonicalize_name(req.name)) in req.specifier, f"requirements.lock does not pin {pin}"


def test_unlocked_dependency_is_caught(tmp_path):
    # The check itself: a requirement the lock lacks, or one its pin does not satisfy, is reported.
    pins = lock_pins()
    assert unsatisfied([Requirement("framesift-no-such-package>=1")], pins)
    assert unsatisfied([Requirement(f"ray>{pins['ray']}")], pins)
    assert not unsatisfied([Requirement(f"ray[data]=={pins['ray']}")], pins)


def test_lock_is_closed_under_installed_metadata():
    """Every requirement (extras included, e.g. ray[data,serve]) of every locked package reachable
    from pyproject.toml is pinned too. Read from the installed metadata of packages installed at
    their locked version; `pip check` (in the Makefile and .ci/run) checks the installed set."""
    pins = lock_pins()
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in project_requirements()]
    done, checked, problems = set(), 0, []
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done or name not in pins:
            continue
        done.add((name, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if Version(dist.version) != pins[name]:
            continue  # .venv is not installed from this lock (yet): nothing to read
        checked += 1
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not any(
                req.marker.evaluate({**TARGET, "extra": e}) for e in ("", *extras)
            ):
                continue
            problems += [
                f"{p} (needed by {name}{sorted(extras) if extras else ''})" for p in unsatisfied([req], pins)
            ]
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    if not checked:
        pytest.skip("no locked package is installed at its locked version")
    assert not problems, RELOCK + ":\n  " + "\n  ".join(sorted(set(problems)))
