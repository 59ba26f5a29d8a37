#!/usr/bin/python3
"""The man page and the bash completion name every command and option the CLI has.

    PYTHONPATH=appliance /usr/bin/python3 tests/package/check-docs.py

Reads the argparse tree of sysrq_appliance.cli. The completion lists the commands itself
(it takes the options from --help at run time); the man page must name every command and
every long option as **--option**. Prints what is missing; exit 1 if anything is.
"""

import argparse
import pathlib
import re
import sys

from sysrq_appliance import sequences
from sysrq_appliance.cli import build_parser

REPO = pathlib.Path(__file__).resolve().parents[2]
MAN = REPO / "docs" / "sysrq-appliance.8.rst"
COMPLETION = REPO / "debian" / "completions" / "sysrq-appliance"


def subcommands(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def walk(parser, path=()):
    """(command path, long options) for the parser and every subcommand below it."""
    options = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    yield path, options
    for name, sub in subcommands(parser).items():
        yield from walk(sub, path + (name,))


def main():
    parser = build_parser()
    man = MAN.read_text()
    completion = COMPLETION.read_text()
    problems = []

    for variable, choices in (("commands", subcommands(parser)),
                              ("password_actions", subcommands(subcommands(parser)["password"])),
                              ("fleet_actions", subcommands(subcommands(parser)["fleet"]))):
        listed = re.search(rf'local {variable}="([^"]*)"', completion)
        listed = set(listed.group(1).split()) if listed else set()
        if listed != set(choices):
            problems.append(f"{COMPLETION.name}: {variable}= lists {sorted(listed)}, "
                            f"the CLI has {sorted(choices)}")

    listed = re.search(r'local sequences="([^"]*)"', completion)
    listed = set(listed.group(1).split()) if listed else set()
    if listed != set(sequences.BUILTIN):
        problems.append(f"{COMPLETION.name}: sequences= lists {sorted(listed)}, the built-in "
                        f"sequences are {sorted(sequences.BUILTIN)}")

    for path, options in walk(parser):
        if path and f"**{path[-1]}" not in man and f"{path[-1]}**" not in man:
            problems.append(f"{MAN.name}: command '{' '.join(path)}' is not described")
        for option in sorted(options - {"--help"}):
            if f"**{option}**" not in man:
                where = " ".join(path) or "global"
                problems.append(f"{MAN.name}: option {option} ({where}) is not described")

    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
