"""`fortify profile list` and `fortify profile show`: the built-in profiles; the logic is in
fortify.pipeline.profiles."""

from __future__ import annotations

import typer

NAME = "profile"


def profile_list() -> None:
    """Name and description of every built-in profile."""
    from fortify.pipeline.profiles import list_profiles, load_profile

    names = list_profiles()
    width = max(map(len, names))
    for name in names:
        print(f"{name:{width}s}  {load_profile(name).description}")


def profile_show(
    name: str = typer.Argument(..., help="A built-in profile (`fortify profile list`) or a YAML file."),
) -> None:
    """Print a profile's YAML (with its comments): copy it, edit it, run it with --profile FILE."""
    from fortify.pipeline.profiles import load_profile, profile_path

    path = profile_path(name)
    load_profile(name)  # a user's file is validated before it is shown as a starting point
    print(path.read_text(), end="")


def register(app: typer.Typer) -> None:
    """Add the `fortify profile` group to the app, with its commands `list` and `show`."""
    profile_app = typer.Typer(help="Built-in profiles: list them, print one as a starting point.")
    app.add_typer(profile_app, name=NAME)
    profile_app.command("list")(profile_list)
    profile_app.command("show")(profile_show)
