"""Help text without type noise: typer shows every option's Python type (``<str>``,
``<bool>``, ``<float>``); here options that take a value show a name for it instead
(``--app APP``), flags nothing, and choices their values."""

from __future__ import annotations

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption


def tidy_help(command: TyperCommand | TyperGroup) -> None:
    """Set the metavar of every option of ``command`` and its subcommands (``--help``
    included) that has none."""
    options = [p for p in command.params if isinstance(p, TyperOption)]
    help_option = command.get_help_option(typer.Context(command))
    if isinstance(help_option, TyperOption):
        options.append(help_option)
    for option in options:
        if option.metavar is not None or option.type_descriptor.is_choice:
            continue
        if option.is_flag or option.count:
            option.metavar = ""
        else:
            option.metavar = max(option.opts, key=len).lstrip("-").upper()
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            if isinstance(sub, TyperCommand | TyperGroup):
                tidy_help(sub)
