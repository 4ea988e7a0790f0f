"""The tests are laid out like the code (CONTRIBUTING.md, "Where things go"), and they keep to it:

- a test module never imports another test module, nor `conftest.py` (what tests share is in tests/helpers/; the
  benchmarks and scripts that borrow test helpers import them from there too);
- a test module sits in tests/<package>/ for a package of cft (tests/data/evalsets/ for cft.data.evalsets), in a
  folder of cross-cutting suites (cli, contracts, regression, perf), or at tests/test_<module>.py for a top-level
  module cft/<module>.py that exists;
- every folder of tests is a package (an `__init__.py`), so that tests/data/test_decoy.py and
  tests/demo/test_decoy.py import as two modules and `tests.helpers` imports from any of them.

Each check is a function of the repository root, run here on this checkout and on a tiny tree that breaks it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

CROSS_CUTTING = ("cli", "contracts", "regression", "perf")


def python_files(root: Path, *folders: str) -> list[Path]:
    found = [p for folder in folders if (root / folder).is_dir() for p in (root / folder).rglob("*.py")]
    return sorted(p for p in found if "__pycache__" not in p.parts)


def find_test_modules(root: Path) -> list[Path]:
    return sorted((root / "tests").rglob("test_*.py"))


def imported_names(path: Path, root: Path) -> list[str]:
    """The dotted names `path` imports: modules, and module.name for each `from module import name` (relative
    imports resolved against the file's package)."""
    package = list(path.relative_to(root).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names += [module, *(f"{module}.{alias.name}" for alias in node.names)]
    return names


def is_test_module(name: str) -> bool:
    parts = name.split(".")
    if len(parts) == 1:
        return parts[0].startswith("test_")
    return parts[0] == "tests" and any(part.startswith("test_") for part in parts[1:])


def is_conftest(name: str) -> bool:
    parts = name.split(".")
    return parts[-1] == "conftest" and (len(parts) == 1 or parts[0] == "tests")


def imports_of_test_modules(root: Path) -> list[str]:
    """'FILE imports NAME' for every import of a test module from tests/, benchmarks/ or scripts/."""
    return [
        f"{path.relative_to(root)} imports {name}"
        for path in python_files(root, "tests", "benchmarks", "scripts")
        for name in imported_names(path, root)
        if is_test_module(name)
    ]


def imports_of_conftest(root: Path) -> list[str]:
    """'FILE imports NAME' for every import of a conftest.py (fixtures are found by pytest, never imported)."""
    return [
        f"{path.relative_to(root)} imports {name}"
        for path in python_files(root, "tests", "benchmarks", "scripts")
        if path.name != "conftest.py"
        for name in imported_names(path, root)
        if is_conftest(name)
    ]


def misplaced_test_modules(root: Path) -> list[str]:
    """Every test module that sits neither under a package of cft, nor in a cross-cutting folder, nor at tests/
    named after a top-level module of cft."""
    src = root / "src" / "cft"
    wrong = []
    for path in find_test_modules(root):
        folders = path.relative_to(root / "tests").parts[:-1]
        if not folders:
            module = path.stem.removeprefix("test_")
            if module.startswith("_") or not (src / f"{module}.py").is_file():
                wrong.append(f"{path.relative_to(root)}: cft has no top-level module {module}")
        elif folders[0] in CROSS_CUTTING:
            continue
        elif not (src.joinpath(*folders) / "__init__.py").is_file():
            wrong.append(f"{path.relative_to(root)}: cft.{'.'.join(folders)} is not a package")
    return wrong


def folders_without_init(root: Path) -> list[str]:
    """Every folder under tests/ that holds Python files but no __init__.py."""
    folders = {path.parent for path in python_files(root, "tests")}
    return sorted(str(f.relative_to(root)) for f in folders if not (f / "__init__.py").is_file())


# ---- this checkout -------------------------------------------------------------------------------------------------


def test_the_tests_are_found():
    modules = find_test_modules(ROOT)
    assert len(modules) > 30 and ROOT / "tests" / "contracts" / "test_layout.py" in modules


def test_no_module_imports_a_test_module():
    assert imports_of_test_modules(ROOT) == [], "import what tests share from tests/helpers/"


def test_no_module_imports_conftest():
    assert imports_of_conftest(ROOT) == [], "conftest.py holds fixtures; import helpers from tests/helpers/"


def test_every_test_module_sits_where_its_code_is():
    assert misplaced_test_modules(ROOT) == [], "tests/<package>/test_<module>.py, or a cross-cutting folder"


def test_every_test_folder_is_a_package():
    assert folders_without_init(ROOT) == [], "add an empty __init__.py"


# ---- the checks on a tree that breaks them -----------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A repository with cft.world (a package), cft/losses.py, tests/helpers/ and two clean test modules."""
    for folder in ("src/cft/world", "tests/helpers", "tests/world", "tests/cli"):
        (tmp_path / folder).mkdir(parents=True)
    for package in ("src/cft", "src/cft/world", "tests", "tests/helpers", "tests/world", "tests/cli"):
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "src/cft/losses.py").write_text("")
    (tmp_path / "tests/helpers/models.py").write_text("TINY = 1\n")
    (tmp_path / "tests/conftest.py").write_text("from tests.helpers.models import TINY\n")
    (tmp_path / "tests/world/test_world.py").write_text("from tests.helpers.models import TINY\nimport cft.world\n")
    (tmp_path / "tests/test_losses.py").write_text("from .helpers import models\n")
    return tmp_path


def test_a_clean_tree_passes(tree):
    assert imports_of_test_modules(tree) == imports_of_conftest(tree) == misplaced_test_modules(tree) == []
    assert folders_without_init(tree) == []


def test_a_folder_without_init_is_found(tree):
    (tree / "tests/world/__init__.py").unlink()
    assert folders_without_init(tree) == ["tests/world"]


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("from tests.world.test_world import TINY", ["tests.world.test_world", "tests.world.test_world.TINY"]),
        ("from tests.world import test_world", ["tests.world.test_world"]),
        ("import tests.world.test_world", ["tests.world.test_world"]),
        ("from .test_recipes import TINY", ["tests.cli.test_recipes", "tests.cli.test_recipes.TINY"]),
        ("from . import test_recipes", ["tests.cli.test_recipes"]),
        ("from ..world import test_world", ["tests.world.test_world"]),
        ("import test_world", ["test_world"]),
    ],
)
def test_an_import_of_a_test_module_is_found(tree, source, names):
    (tree / "tests/cli/test_cli.py").write_text(f"def f():\n    {source}\n")  # inside a function too
    assert imports_of_test_modules(tree) == [f"tests/cli/test_cli.py imports {name}" for name in names]


def test_a_helper_or_a_benchmark_importing_a_test_module_is_found(tree):
    (tree / "benchmarks").mkdir()
    (tree / "benchmarks" / "bench.py").write_text("from tests.world.test_world import TINY\n")
    (tree / "tests/helpers/more.py").write_text("from ..world import test_world\n")
    assert imports_of_test_modules(tree) == [
        "benchmarks/bench.py imports tests.world.test_world",
        "benchmarks/bench.py imports tests.world.test_world.TINY",
        "tests/helpers/more.py imports tests.world.test_world",
    ]


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("from tests.conftest import TINY", "tests.conftest"),
        ("from tests import conftest", "tests.conftest"),
        ("import conftest", "conftest"),
        ("from .. import conftest", "tests.conftest"),
    ],
)
def test_an_import_of_conftest_is_found(tree, source, name):
    (tree / "tests/world/test_world.py").write_text(f"{source}\n")
    assert imports_of_conftest(tree) == [f"tests/world/test_world.py imports {name}"]


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("tests/test_recipe.py", "cft has no top-level module recipe"),
        ("tests/test___init__.py", "cft has no top-level module __init__"),
        ("tests/trainer/test_trainer.py", "cft.trainer is not a package"),
        ("tests/world/extra/test_world.py", "cft.world.extra is not a package"),
        ("tests/helpers/test_models.py", "cft.helpers is not a package"),
    ],
)
def test_a_misplaced_test_module_is_found(tree, path, why):
    (tree / path).parent.mkdir(parents=True, exist_ok=True)
    (tree / path).write_text("")
    assert misplaced_test_modules(tree) == [f"{path}: {why}"]


def test_cross_cutting_folders_and_subpackages_are_places(tree):
    (tree / "src/cft/world/sub").mkdir()
    (tree / "src/cft/world/sub/__init__.py").write_text("")
    for path in ("tests/world/sub/test_x.py", "tests/regression/test_anything.py", "tests/perf/test_bench.py"):
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text("")
    assert misplaced_test_modules(tree) == []
