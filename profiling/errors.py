"""The errors autopgo raises, all under one root, ``AutopgoError``.

A caller that handles whatever autopgo can raise catches ``AutopgoError``; the
types below it keep their own meaning (and their standard bases, so that
``except ValueError`` code keeps working). Errors defined next to their
concern (``ClientError``, ``DiscoveryError``, ``EventError``, ``ScrapeError``,
``StoreURLError``, ``UnitError``, the API's ``ApiError`` and the flows'
``PrefectSetupError``) derive from it too.
"""

from __future__ import annotations

from collections.abc import Sequence


class AutopgoError(Exception):
    """The root of every error autopgo raises on purpose; its message is fit to show a user."""


class ProfileError(AutopgoError, ValueError):
    """A profile that cannot be decoded, validated, merged, pruned or trimmed.

    The message is one line that says what is wrong, fit to show a user as is.
    """


class ProfileTooLargeError(ProfileError):
    """A profile that is larger than the allowed size once decompressed (or, raw, as it is).

    Its own type because it is the caller's limit that refuses it, not a flaw in
    the data: the API answers it with 413, as it does a request body over the limit.
    """


class PgoUnusableError(ProfileError):
    """A valid profile that Go's PGO cannot use: no CPU sample type, a negative
    weight, or no ``Function.start_line`` where the compiler looks."""


def located(exc: ProfileError, where: str) -> ProfileError:
    """``exc`` with ``where`` (a file name, say) before its message, of the same type."""
    return type(exc)(f"{where}: {exc}")


class ConfigError(AutopgoError, ValueError):
    """A configuration file or value that cannot be used.

    It carries every mistake found, one line each (``problems``), such as
    ``autopgo.yaml:4: sweep_every: 60 has no unit: write 60s, 1m or 1h30m``;
    its message is those lines joined by newlines, so one mistake is one line,
    fit for a log line or a health check. ``report()`` is what a person at a
    terminal reads: the same, after how many there are in ``file`` when there
    are several, and followed by the ``context`` lines that show where the
    mistake is (the lines of a YAML syntax error, with a caret at its column).
    """

    def __init__(self, *problems: str, file: str | None = None, context: Sequence[str] = ()) -> None:
        super().__init__(*problems)
        self.problems: list[str] = list(problems)
        self.file = file
        self.context: tuple[str, ...] = tuple(context)

    def __str__(self) -> str:
        return "\n".join(self.problems)

    def report(self) -> str:
        """Every mistake, counted first when there are several, then the context lines."""
        count = len(self.problems)
        heading = [f"{self.file}: {count} mistakes" if self.file else f"{count} mistakes"] if count > 1 else []
        return "\n".join([*heading, *self.problems, *self.context])


class BlobNotFoundError(AutopgoError, LookupError):
    """No object is stored under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"no object at {self.key!r}"


class PreconditionFailedError(AutopgoError):
    """A conditional write lost a race: the object exists (create-only) or changed (replace)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"object at {self.key!r} changed concurrently"


class BlobStoreError(AutopgoError):
    """The blob store failed or is unreachable; the message says which and why."""


class StagingError(AutopgoError):
    """An upload could not be staged for a reason that is worth retrying; the message says so."""
