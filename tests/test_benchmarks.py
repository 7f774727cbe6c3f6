"""Every benchmark imports and parses its command line, so that renaming a stage or a helper of
jobs/ or operators/ fails here instead of silently breaking a benchmark nobody ran since.

Fast: no Ray started, no model built, no video read. The imports that a benchmark makes inside
its functions (to keep torch and Ray out of its start-up) are checked too, from its source:
importing the module does not run them.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MODULES = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "__init__")
# the project's own packages: a name imported from one of them must exist there
PROJECT = ("benchmarks", "jobs", "operators", "tests")
# packages whose private names (leading "_") a benchmark must not use: they may change any time
PRIVATE_OFF_LIMITS = ("jobs", "operators")


def project_imports(name: str) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None for a plain `import`, line) of every import of a
    project package in benchmarks/<name>.py, at any depth."""
    tree = ast.parse((BENCHMARKS / f"{name}.py").read_text(), filename=f"{name}.py")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in PROJECT:
                found += [(node.module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names
                      if alias.name.split(".")[0] in PROJECT]
    return found


def runnable(module) -> bool:
    return callable(getattr(module, "main", None))


def test_the_benchmarks_are_found():
    assert {"speed", "gpu_check", "common", "scale"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_imports(name):
    importlib.import_module(f"benchmarks.{name}")


@pytest.mark.parametrize("name", MODULES)
def test_every_project_name_a_benchmark_imports_exists(name):
    missing = []
    for module, attr, line in project_imports(name):
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"line {line}: import {module}: {e}")
            continue
        if attr is not None and attr != "*" and not hasattr(mod, attr):
            try:  # `from package import submodule`
                importlib.import_module(f"{module}.{attr}")
            except ImportError:
                missing.append(f"line {line}: {module} has no {attr}")
    assert not missing, f"benchmarks/{name}.py: " + "; ".join(missing)


@pytest.mark.parametrize("name", MODULES)
def test_benchmarks_use_no_private_names_of_the_core(name):
    private = [f"line {line}: {module}.{attr}" for module, attr, line in project_imports(name)
               if module.split(".")[0] in PRIVATE_OFF_LIMITS and attr and attr.startswith("_")]
    assert not private, f"benchmarks/{name}.py imports private helpers: " + ", ".join(private)


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_parses_help(name, capsys):
    module = importlib.import_module(f"benchmarks.{name}")
    if not runnable(module):
        pytest.skip(f"benchmarks.{name} is a helper module (no main)")
    assert callable(getattr(module, "parse_args", None)), f"benchmarks.{name} has main but no parse_args"
    with pytest.raises(SystemExit) as exc:
        module.parse_args(["--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out
