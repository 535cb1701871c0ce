"""The dependency rules of docs/architecture.md, checked on the imports of every module of ``hts``.

Imports are read with :mod:`ast` (nothing is imported), including those
inside functions, so a lazy import breaks a rule as much as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hts

PACKAGE = Path(hts.__file__).resolve().parent
MAX_LINES = 500

# (modules the rule applies to, imports they may not make, why)
RULES = [
    ("hts.engine", ("dask", "distributed", "dask_jobqueue", "hts.screen", "hts.io.results"),
     "the engine knows nothing of Dask, SLURM or a run's results folder"),
    ("hts.model", ("dask", "distributed", "dask_jobqueue", "hts.screen", "hts.io.results"),
     "the model knows nothing of Dask, SLURM or a run's results folder"),
    ("hts.io", ("dask", "distributed", "dask_jobqueue"), "io knows no Dask"),
]
API_USERS = ("hts", "hts.cli", "hts.cli_args")  # hts/__init__.py and hts/cli*.py may import the facade
API_NAMES = ("api", "segment", "open_results")  # ``from hts import <name>`` goes through the facade


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, package: Path = PACKAGE) -> list[tuple[int, list[str]]]:
    """``(line, modules)`` of every import statement in ``path``.

    ``import a, b`` gives ``[a, b]``; ``from a import b`` gives ``[a, a.b]``
    (``b`` may be a submodule); relative imports are resolved.
    """
    name = _module_name(path, package)
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.append((node.lineno, [a.name for a in node.names]))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, [base] + [f"{base}.{a.name}" for a in node.names if a.name != "*"]))
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(package: Path = PACKAGE) -> list[str]:
    """Every broken rule under ``package`` (a directory named ``hts``), one line each."""
    out = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package.parent)
        module = _module_name(path, package)
        n_lines = len(path.read_text().splitlines())
        if n_lines > MAX_LINES:
            out.append(f"{where}: {n_lines} lines (at most {MAX_LINES}: split it by job)")
        for line, names in imports(path, package):
            facade = [n for n in names if _within(n, "hts.api") or n in {f"hts.{a}" for a in API_NAMES}]
            if facade and module not in API_USERS:
                out.append(f"{where}:{line}: imports {facade[0]} (only hts/__init__.py and hts/cli*.py use the facade)")
            for scope, banned, why in RULES:
                bad = [n for n in names if any(_within(n, b) for b in banned)]
                if bad and _within(module, scope):
                    out.append(f"{where}:{line}: imports {bad[0]} ({why})")
    return sorted(set(out))


def test_hts_keeps_its_dependency_rules():
    found = violations()
    assert not found, "\n".join(found)


@pytest.mark.parametrize("file, source", [
    ("engine/x.py", "import dask.array as da\n"),
    ("engine/x.py", "def f():\n    from distributed import Client\n"),
    ("model/x.py", "from hts.screen.tasks import Job\n"),
    ("engine/x.py", "from hts.io import results\n"),
    ("engine/x.py", "from ..io.results import Results\n"),
    ("io/x.py", "import distributed\n"),
    ("analysis/x.py", "from hts.api import segment\n"),
    ("screen/x.py", "from hts import segment\n"),
    ("io/x.py", "x = 1\n" * (MAX_LINES + 1)),
])
def test_a_broken_rule_is_caught(tmp_path, file, source):
    package = tmp_path / "hts"
    (package / file).parent.mkdir(parents=True)
    (package / "__init__.py").write_text("from hts.api import segment\n")  # allowed here
    (package / "cli.py").write_text("import hts.api\n")  # and here
    (package / file).write_text(source)
    found = violations(package)
    assert len(found) == 1, found  # the broken rule, and nothing in the allowed files


def test_allowed_imports_pass(tmp_path):
    package = tmp_path / "hts"
    for file, source in [("__init__.py", "from hts.api import segment\n"), ("cli_args.py", "from hts import api\n"),
                         ("engine/x.py", "import zarr\nimport torch\nfrom hts.model import InstanceUNet\n"),
                         ("io/x.py", "import zarr\nfrom hts.io.ngff import open_source\n"),
                         ("screen/x.py", "import dask\nimport distributed\nfrom hts.io.results import Results\n")]:
        (package / file).parent.mkdir(parents=True, exist_ok=True)
        (package / file).write_text(source)
    assert violations(package) == []
