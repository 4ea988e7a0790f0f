"""`cft recipes`: the recipes shipped with the package: list them, copy one to edit, validate one without running it."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from cft.config import RECIPE_KINDS
from cft.errors import CftError

KINDS = tuple(RECIPE_KINDS)


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Register `cft recipes` and its verbs ls, cp and validate."""
    p = subcommands.add_parser(
        "recipes",
        help="list, copy and validate the packaged recipes (finetune, run and demo configs)",
        description=(
            "Recipes ship inside the package and are named by their path without .yaml (world-cft, "
            "imagenet/vit-b16, demo). Every --config / RECIPE argument takes such a name or a file."
        ),
    )
    verbs = p.add_subparsers(dest="recipes_command", metavar="VERB", required=True)
    ls = verbs.add_parser("ls", help="list the packaged recipes with their kind and first comment line")
    ls.set_defaults(run=list_recipes)
    cp = verbs.add_parser("cp", help="copy a packaged recipe to a file to edit")
    cp.add_argument("name", metavar="NAME", help="a packaged recipe (cft recipes ls)")
    cp.add_argument("dest", metavar="DEST", help="the file (or folder) to write; an existing file is kept")
    cp.set_defaults(run=copy_recipe)
    check = verbs.add_parser("validate", help="read and check a recipe (a name or a file) without running it")
    check.add_argument("recipe", metavar="RECIPE", help="a packaged recipe name or a YAML file")
    check.add_argument("--kind", choices=KINDS, help="what the recipe is for (default: its `kind:` line)")
    check.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (~KEY deletes it)"
    )
    check.set_defaults(run=validate_recipe)


def recipe_kind(path: Path, given: str | None = None) -> str:
    """The kind a recipe file declares (`kind:`), or `given` (--kind); both must agree. Never guessed."""
    from cft.config import declared_kind, read_yaml

    declared = declared_kind(read_yaml(path), f"recipe {path}")
    if given is not None and declared is not None and given != declared:
        raise CftError(f"recipe {path} declares kind {declared}, not --kind {given}")
    kind = given or declared
    if kind is None:
        raise CftError(
            f"recipe {path} declares no kind: add a top-level line `kind: finetune` (or {', '.join(KINDS[1:])}), "
            "or pass --kind"
        )
    return kind


def recipe_summary(path: Path) -> str:
    """The first comment line of a recipe file: what it is."""
    first = next((line for line in path.read_text().splitlines() if line.startswith("#")), "#")
    return first.lstrip("# ").strip()


def list_recipes(args: argparse.Namespace) -> int:
    """Print each packaged recipe: name, kind, what it is."""
    from cft.config import packaged_recipes

    recipes = packaged_recipes()
    width = max(len(name) for name in recipes)
    for name, path in recipes.items():
        print(f"{name:{width}s}  {recipe_kind(path):10s}  {recipe_summary(path)}")
    return 0


def copy_recipe(args: argparse.Namespace) -> int:
    """Copy a packaged recipe; never overwrite a file."""
    from cft.config import packaged_recipes

    recipes = packaged_recipes()
    name = args.name.removesuffix(".yaml")
    if name not in recipes:
        raise CftError(f"no packaged recipe {args.name!r}; packaged: {', '.join(recipes)}")
    dest = Path(args.dest).expanduser()
    if dest.is_dir():
        dest = dest / recipes[name].name
    if dest.exists():
        raise CftError(f"{dest} already exists; choose another DEST or remove it first")
    if not dest.parent.is_dir():
        raise CftError(f"folder {dest.parent} does not exist")
    shutil.copyfile(recipes[name], dest)
    print(f"wrote {dest}")
    return 0


def validate_recipe(args: argparse.Namespace) -> int:
    """Load the recipe as its kind's loader does (every field and cross-field check), then say it is valid."""
    from cft.config import load_config_data, resolve_config

    kind = recipe_kind(resolve_config(args.recipe), args.kind)
    data = load_config_data(args.recipe, args.set, kind=kind)
    if kind == "finetune":
        from cft.train.recipe import recipe_from_dict

        recipe_from_dict(data)
    elif kind == "run":
        from cft.pipeline import load_run_recipe

        load_run_recipe(args.recipe, args.set)
    elif kind == "decoy-demo":
        from cft.demo.decoy import decoy_bench_config

        decoy_bench_config(data)
    else:
        from cft.demo import demo_config

        demo_config(data)
    print(f"{args.recipe}: a valid {kind} recipe")
    return 0
