"""Errors raised by the profiling package."""


class ProfileError(ValueError):
    """A profile that cannot be decoded, validated, merged, pruned or trimmed.

    The message is one line that says what is wrong, fit to show a user as is.
    """


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message names where."""
