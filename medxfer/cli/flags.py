"""Boolean flags as the CLI conventions have them: ``--resume``, not ``--resume <bool>``.

A flag takes no value, so in ``medxfer run --resume true --output X`` the word ``true`` is
the next argument (the CONFIG file). Such a word right after a flag is refused with a
usage error saying how to write the flag, unless a file of that name exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Words that mean a boolean value, as a user might write one after a flag.
BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "y", "n", "t", "f",
                           "1", "0"})


def tidy_flags(command: Any) -> None:
    """Make the flags of ``command`` and of each subcommand show no type in ``--help`` and
    refuse a boolean word written after them."""
    for param in getattr(command, "params", ()):
        _hide_type(param)
    _hide_help_option_type(command)
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        _refuse_flag_values(command)
    for subcommand in (subcommands or {}).values():
        tidy_flags(subcommand)


def _is_flag(param: Any) -> bool:
    return bool(getattr(param, "is_flag", False)) and not getattr(param, "count", False)


def _hide_type(param: Any) -> None:
    """typer's rich help shows every option's type, ``<bool>`` for a flag too."""
    if _is_flag(param):
        param.display_type_rich = lambda ctx: None


def _hide_help_option_type(command: Any) -> None:
    """The ``--help`` option is made on first use, so it is tidied when it is made."""
    get_help_option = getattr(command, "get_help_option", None)
    if get_help_option is None:
        return

    def tidied_help_option(ctx: Any) -> Any:
        option = get_help_option(ctx)
        if option is not None:
            _hide_type(option)
        return option

    command.get_help_option = tidied_help_option


def _refuse_flag_values(command: Any) -> None:
    parse_args = command.parse_args

    def parse_args_refusing_flag_values(ctx: Any, args: list[str]) -> list[str]:
        flags = {opt for param in command.params if _is_flag(param)
                 for opt in (*param.opts, *param.secondary_opts)}
        for flag, word in zip(args, args[1:]):
            if flag == "--":
                break
            if flag in flags and word.lower() in BOOLEAN_WORDS and not Path(word).exists():
                ctx.fail(f"{flag} is a flag and takes no value, so {word!r} would be read as "
                         f"the next argument; write {flag} alone to turn it on, and leave it "
                         "out to keep it off")
        return parse_args(ctx, args)

    command.parse_args = parse_args_refusing_flag_values
