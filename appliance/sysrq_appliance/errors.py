"""Exceptions that the CLI turns into one-line messages and exit codes."""


class ApplianceError(Exception):
    """A runtime failure: the kernel or the system refused something (exit 1)."""

    exit_code = 1


class InputError(ApplianceError):
    """Bad input from the user: config, arguments, key material (exit 2)."""

    exit_code = 2
