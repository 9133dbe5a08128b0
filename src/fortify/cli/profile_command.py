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
    """Print every value of a profile, defaults included, as YAML: copy it, edit it, run it with --profile
    FILE."""
    import yaml

    from fortify.pipeline.profiles import load_profile, profile_path

    path = profile_path(name)
    profile = load_profile(name)  # resolved: `extends`, the evaluation's defaults, eps as a number
    print(f"# profile {profile.name}: every value, defaults included (its file, with comments: {path})")
    print("# train/normal/adversarial: what differs from TrainConfig's defaults (`fortify train --help`)")
    print(yaml.safe_dump(profile.to_dict(), sort_keys=False), end="")


def register(app: typer.Typer) -> None:
    """Add the `fortify profile` group to the app, with its commands `list` and `show`."""
    profile_app = typer.Typer(help="Built-in profiles: list them, print one as a starting point.")
    app.add_typer(profile_app, name=NAME)
    profile_app.command("list")(profile_list)
    profile_app.command("show")(profile_show)
