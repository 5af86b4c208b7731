"""Scraping CPU profiles from an app's instances and handing each one on.

Picks up to ``sample_size`` targets at random, fetches
``/debug/pprof/profile?seconds=D`` from each concurrently, and passes every
profile to ``upload``. The timeout of a fetch is D plus a margin: the target
only answers once it has profiled for D seconds. A failing target is logged
and skipped; it never stops the others.

The work is asynchronous, so that one process can keep thousands of fetches
open at once on one ``httpx.AsyncClient`` (a fleet's scrapes are mostly
waiting for targets to finish profiling). ``fetch_limit`` bounds how many are
open at a time across every app that shares it. ``scrape`` runs one app's
scrape to the end for callers without an event loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from ..errors import AutopgoError
from .targets import Target

log = logging.getLogger(__name__)

FETCH_MARGIN = timedelta(seconds=30)
CONNECT_TIMEOUT = 10.0
MAX_PROFILE_BYTES = 64 << 20
DEFAULT_FETCH_LIMIT = 512  # fetches open at once in one process

Upload = Callable[[bytes], Awaitable[str]]
TargetUpload = Callable[[bytes, Target], Awaitable[str]]  # also told the target (its workload, ...)


@dataclass(slots=True)
class ScrapeReport:
    """What one scrape did: the staged key of each target's upload, and why each failed target failed."""

    uploaded: dict[str, str] = field(default_factory=dict)  # target URL -> staged key
    failed: dict[str, str] = field(default_factory=dict)  # target URL -> why


class ScrapeError(AutopgoError):
    """A target could not be profiled; the message says which and why."""


def pick(targets: Sequence[Target], sample_size: int, rng: random.Random | None = None) -> list[Target]:
    """Up to ``sample_size`` of ``targets`` at random, each at most once; all of them when there are no more."""
    targets = list(dict.fromkeys(targets))
    if len(targets) <= sample_size:
        return targets
    return (rng or random).sample(targets, sample_size)


def profile_seconds(duration: timedelta) -> int:
    """The ``seconds`` a target is asked to profile for: whole seconds, at least one."""
    return max(1, round(duration.total_seconds()))


def fetch_timeout(duration: timedelta) -> float:
    """Seconds a fetch may take: the profile's own duration plus a margin."""
    return profile_seconds(duration) + FETCH_MARGIN.total_seconds()


async def fetch_profile(client: httpx.AsyncClient, target: Target, duration: timedelta) -> bytes:
    """One CPU profile from ``target``, profiled for ``duration``; ScrapeError saying why not."""
    seconds = profile_seconds(duration)
    limit = fetch_timeout(duration)
    url = target.url()
    try:
        async with asyncio.timeout(limit):
            return await _fetch(client, url, seconds, limit)
    except TimeoutError:
        raise ScrapeError(f"{url}: no profile within {limit:.0f}s") from None
    except httpx.TimeoutException:
        raise ScrapeError(f"{url}: no profile within {limit:.0f}s") from None
    except httpx.HTTPError as exc:
        raise ScrapeError(f"{url}: {type(exc).__name__}: {exc}") from None


async def _fetch(client: httpx.AsyncClient, url: str, seconds: int, limit: float) -> bytes:
    timeout = httpx.Timeout(CONNECT_TIMEOUT, read=limit)
    async with client.stream("GET", url, params={"seconds": seconds}, timeout=timeout) as response:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_PROFILE_BYTES:
                raise ScrapeError(f"{url}: profile larger than {MAX_PROFILE_BYTES} bytes")
        if response.status_code != 200:
            detail = " ".join(body[:200].decode(errors="replace").split())
            raise ScrapeError(f"{url}: HTTP {response.status_code}{': ' + detail if detail else ''}")
        return bytes(body)


async def scrape_async(
    targets: Sequence[Target],
    sample_size: int,
    duration: timedelta,
    upload: Upload | TargetUpload,
    *,
    client: httpx.AsyncClient,
    rng: random.Random | None = None,
    fetch_limit: asyncio.Semaphore | None = None,
    with_target: bool = False,
) -> ScrapeReport:
    """Profile up to ``sample_size`` of ``targets`` at once and upload each profile.

    ``fetch_limit``, shared by concurrent scrapes, bounds the fetches open at
    once; a fetch waiting for it does not hold up the others. With
    ``with_target``, ``upload`` is given the target too (a ``TargetUpload``),
    so that it can upload for the target's workload.
    """
    chosen = pick(targets, sample_size, rng)
    report = ScrapeReport()
    if not chosen:
        log.warning("no targets to scrape")
        return report

    async def one(target: Target) -> None:
        url = target.url()
        try:
            if fetch_limit is None:
                data = await fetch_profile(client, target, duration)
            else:
                async with fetch_limit:
                    data = await fetch_profile(client, target, duration)
            if with_target:
                report.uploaded[url] = await upload(data, target)  # type: ignore[call-arg]
            else:
                report.uploaded[url] = await upload(data)  # type: ignore[call-arg]
            log.debug("scraped and uploaded %s", url)
        except Exception as exc:  # noqa: BLE001 - one failing target must not stop the others
            report.failed[url] = str(exc)
            reason = str(exc)
            log.warning("skipping %s", reason if reason.startswith(url) else f"{url}: {reason}")

    await asyncio.gather(*(one(t) for t in chosen))
    return report


def scrape(
    targets: Sequence[Target],
    sample_size: int,
    duration: timedelta,
    upload: Callable[[bytes], str],
    *,
    rng: random.Random | None = None,
) -> ScrapeReport:
    """``scrape_async`` run to the end, with a blocking ``upload`` (run in a thread)."""

    async def run() -> ScrapeReport:
        async with new_client() as client:
            return await scrape_async(
                targets, sample_size, duration, lambda data: asyncio.to_thread(upload, data), client=client, rng=rng
            )

    return asyncio.run(run())


def new_client(max_connections: int = DEFAULT_FETCH_LIMIT) -> httpx.AsyncClient:
    """The client scrapes share: no redirects (a target that redirects is misconfigured), many connections."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=64)
    return httpx.AsyncClient(follow_redirects=False, limits=limits)


__all__ = [
    "DEFAULT_FETCH_LIMIT",
    "ScrapeError",
    "ScrapeReport",
    "fetch_profile",
    "fetch_timeout",
    "new_client",
    "pick",
    "profile_seconds",
    "scrape",
    "scrape_async",
    "TargetUpload",
]
