"""Scraping CPU profiles from an app's instances and handing each one on.

Picks up to ``sample_size`` targets at random, fetches
``/debug/pprof/profile?seconds=D`` from each concurrently, and passes every
profile to ``upload``. The timeout of a fetch is D plus a margin: the target
only answers once it has profiled for D seconds. A failing target is logged
and skipped; it never stops the others.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from .targets import Target

log = logging.getLogger(__name__)

FETCH_MARGIN = timedelta(seconds=30)
MAX_PROFILE_BYTES = 64 << 20


@dataclass(slots=True)
class ScrapeReport:
    uploaded: dict[str, str] = field(default_factory=dict)  # target URL -> staged key
    failed: dict[str, str] = field(default_factory=dict)  # target URL -> why


class ScrapeError(Exception):
    """A target could not be profiled; the message says which and why."""


def pick(targets: Sequence[Target], sample_size: int, rng: random.Random | None = None) -> list[Target]:
    targets = list(dict.fromkeys(targets))
    if len(targets) <= sample_size:
        return targets
    return (rng or random).sample(targets, sample_size)


def fetch_profile(client: httpx.Client, target: Target, duration: timedelta) -> bytes:
    """One CPU profile from ``target``, profiled for ``duration``."""
    seconds = max(1, round(duration.total_seconds()))
    limit = seconds + FETCH_MARGIN.total_seconds()
    deadline = time.monotonic() + limit
    url = target.url()
    try:
        with client.stream("GET", url, params={"seconds": seconds}, timeout=httpx.Timeout(10.0, read=limit)) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_PROFILE_BYTES:
                    raise ScrapeError(f"{url}: profile larger than {MAX_PROFILE_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise ScrapeError(f"{url}: no profile within {limit:.0f}s")
            if response.status_code != 200:
                detail = " ".join(body[:200].decode(errors="replace").split())
                raise ScrapeError(f"{url}: HTTP {response.status_code}{': ' + detail if detail else ''}")
            return bytes(body)
    except httpx.TimeoutException:
        raise ScrapeError(f"{url}: no profile within {limit:.0f}s") from None
    except httpx.HTTPError as exc:
        raise ScrapeError(f"{url}: {type(exc).__name__}: {exc}") from None


def scrape(
    targets: Sequence[Target],
    sample_size: int,
    duration: timedelta,
    upload: Callable[[bytes], str],
    *,
    rng: random.Random | None = None,
    client: httpx.Client | None = None,
) -> ScrapeReport:
    """Profile up to ``sample_size`` of ``targets`` at once and upload each profile."""
    chosen = pick(targets, sample_size, rng)
    report = ScrapeReport()
    if not chosen:
        log.warning("no targets to scrape")
        return report
    own = client is None
    http = client or httpx.Client(follow_redirects=False)

    def one(target: Target) -> None:
        url = target.url()
        try:
            report.uploaded[url] = upload(fetch_profile(http, target, duration))
            log.info("scraped and uploaded %s", url)
        except Exception as exc:  # noqa: BLE001 - one failing target must not stop the others
            report.failed[url] = str(exc)
            log.warning("skipping %s: %s", url, exc)

    try:
        with ThreadPoolExecutor(max_workers=len(chosen), thread_name_prefix="scrape") as pool:
            list(pool.map(one, chosen))
    finally:
        if own:
            http.close()
    return report
