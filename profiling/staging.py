"""Staging an upload: how the API makes an upload durable before it answers.

One function, used by the API's upload handler (and by tests that play several
API servers), so that what an upload writes is decided in one place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .blobs import BlobStore
from .errors import PreconditionFailedError, StagingError
from .names import new_staging_key

log = logging.getLogger(__name__)

Clock = Callable[[], int]  # nanoseconds since the epoch, as time.time_ns
STAGE_ATTEMPTS = 3


def stage_upload(store: BlobStore, app: str, data: bytes, *, clock: Clock = time.time_ns) -> str:
    """Store ``data`` under a fresh staging key of ``app`` (create-only) and return the key.

    ``clock`` names the key; a server's own clock by default.
    """
    for _ in range(STAGE_ATTEMPTS):
        key = new_staging_key(app, clock())
        try:
            store.put(key, data, if_none_match=True)
            return key
        except PreconditionFailedError:
            log.warning("staging key %s already taken; trying another", key)
    raise StagingError("could not find a free staging key; try again")
