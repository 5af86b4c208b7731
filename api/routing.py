"""Which handler a method and path name, and the app in the path.

Routes are fixed segment patterns; ``{app}`` matches one segment, which is
percent-decoded on its own (so ``%2F`` never splits it and ``%2e%2e`` is
seen as ``..``) and must be a valid app name (``names.is_valid_app_name``),
else the request is a 400. No dot-segment normalization is done: ``..`` is
just an invalid name. Unknown paths are 404, known paths with another method
405 with an ``Allow`` header; a route that answers GET answers HEAD too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from profiling.names import MAX_APP_NAME, is_valid_app_name

from .errors import ApiError, bad_request, not_found
from .messages import Request, Response

Handler = Callable[[Request], Response]
APP = "{app}"


@dataclass(frozen=True, slots=True)
class Route:
    """A path pattern and the handler for each method it answers."""

    pattern: str  # e.g. "/api/profile/{app}"
    methods: Mapping[str, Handler]

    @property
    def segments(self) -> tuple[str, ...]:
        """The pattern's path segments; ``{app}`` stands for any one segment."""
        return tuple(self.pattern.strip("/").split("/"))

    def allowed(self) -> list[str]:
        """The methods the route answers, sorted, with HEAD wherever GET is: what ``Allow`` lists."""
        methods = set(self.methods)
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)

    def handler(self, method: str) -> Handler | None:
        """The handler for ``method`` (HEAD falls back to GET's), or None if the route does not answer it."""
        found = self.methods.get(method)
        if found is None and method == "HEAD":
            found = self.methods.get("GET")
        return found


@dataclass(frozen=True, slots=True)
class Target:
    """A request target split into its decoded path segments and query."""

    path: str
    segments: tuple[str, ...]
    query: dict[str, list[str]]

    @classmethod
    def parse(cls, target: str) -> Target:
        """Split a request target (origin or absolute form) into path, decoded segments and query;
        ApiError 400 if its path does not start with ``/``."""
        if target.startswith(("http://", "https://")):  # absolute-form (RFC 9112, 3.2.2)
            parts = urlsplit(target)
            path, query = parts.path or "/", parts.query
        else:
            path, _, query = target.partition("#")[0].partition("?")
        if not path.startswith("/"):
            raise bad_request(f"bad request target {target[:100]!r}")
        segments = tuple(unquote(s, errors="replace") for s in path[1:].split("/"))
        return cls(path, segments, parse_qs(query, keep_blank_values=True))


@dataclass(frozen=True, slots=True)
class Match:
    """What ``Router.match`` found: the route, its handler for the method, the app in the path, and the target."""

    route: Route
    handler: Handler
    app: str | None
    target: Target


class Router:
    """Finds the handler for a request: the first route whose pattern fits the path."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)

    def match(self, method: str, target: str) -> Match:
        """The handler for ``method`` on ``target``; ApiError 400, 404 or 405 if there is none."""
        parsed = Target.parse(target)
        for route in self.routes:
            app = _match_segments(route.segments, parsed.segments)
            if app is False:
                continue
            handler = route.handler(method)
            if handler is None:
                allowed = ", ".join(route.allowed())
                raise ApiError(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"method {method} is not allowed on {route.pattern} (allowed: {allowed})",
                    {"Allow": allowed},
                )
            if app is not None and not is_valid_app_name(app):
                raise bad_request(
                    f"invalid app name {app[:100]!r}: use 1 to {MAX_APP_NAME} characters of a-z, 0-9 and '-'"
                )
            return Match(route, handler, app, parsed)
        raise not_found(f"no such endpoint: {parsed.path[:200]}")


def _match_segments(pattern: tuple[str, ...], segments: tuple[str, ...]) -> str | None | Literal[False]:
    """The app segment if ``segments`` fit ``pattern`` (None if it has none); False if they do not."""
    if len(pattern) != len(segments):
        return False
    app: str | None = None
    for want, got in zip(pattern, segments):
        if want == APP:
            app = got
        elif want != got:
            return False
    return app
