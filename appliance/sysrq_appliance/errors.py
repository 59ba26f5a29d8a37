"""Exceptions that the CLI turns into one-line messages and exit codes."""


class ApplianceError(Exception):
    """A runtime failure: the kernel or the system refused something (exit 1)."""

    exit_code = 1


class InputError(ApplianceError):
    """Bad input from the user: config, arguments, key material (exit 2)."""

    exit_code = 2


def excerpt(value, width=40):
    """repr(value), cut to `width` characters: a bad value is named, never dumped."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."
