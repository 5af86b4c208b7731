"""Staging an upload: how the API makes an upload durable before it answers.

One function, used by the API's upload handler (and by tests that play several
API servers), so that what an upload writes is decided in one place.

An upload is staged under the app's generation and answered only once the
generation is seen unchanged after the write (see ``generations.py``): a delete
that advanced it in between has hidden the staged key already, so the upload is
staged again under the new generation. It counts whole, before the delete or
after it, never half.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..errors import PreconditionFailedError, StagingError
from ..storage import BlobStore
from .generations import read_generation
from .layout import new_staging_key

log = logging.getLogger(__name__)

Clock = Callable[[], int]  # nanoseconds since the epoch, as time.time_ns
STAGE_ATTEMPTS = 5


def stage_upload(store: BlobStore, app: str, data: bytes, *, clock: Clock = time.time_ns, workload: str = "") -> str:
    """Store ``data`` under a fresh staging key of ``app`` (create-only) and return the key.

    ``clock`` names the key (a server's own clock by default), and is the
    upload's time (``parts.py``); which delete hides the upload is decided by
    the generation, not by it. ``workload``, if given, is kept in the key.
    """
    generation = read_generation(store, app).number
    for _ in range(STAGE_ATTEMPTS):
        key = new_staging_key(app, clock(), generation, workload)
        try:
            store.put(key, data, if_none_match=True)
        except PreconditionFailedError:
            log.warning("staging key %s already taken; trying another", key)
            continue
        now = read_generation(store, app).number
        if now == generation:
            return key
        log.info("%s: deleted while %s was staged; staging it again after the delete", app, key)
        store.delete(key)  # hidden already; removed here rather than by the delete flow
        generation = now
    raise StagingError("could not stage the upload: its key was taken or the app deleted meanwhile; try again")
