"""Deletes ordered against uploads across API servers whose clocks disagree.

Two "API servers" share one store, each staging and deleting through the
domain functions the API calls, one with its clock 5 minutes ahead and one 5
minutes behind (the clocks are injected; the machine's is never touched). On
the file store and on a real S3 (SeaweedFS): whatever was uploaded before a
DELETE's answer is never merged again, and whatever comes after it starts a
fresh profile.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from seaweed import SeaweedFS, seaweedfs  # noqa: F401  (seaweedfs is a session fixture)
from test_batches import APP, counts, merged_profile, upload_profile

from profiling.pipeline import delete_app, has_data, mark_deleted, merge_pending, stage_upload
from profiling.pprof import encode
from profiling.storage import BlobStore, open_store

SKEW_NS = 5 * 60 * 1_000_000_000


@dataclass
class Server:
    """One API server's view: the shared store and its own clock."""

    store: BlobStore
    offset_ns: int

    def clock(self) -> int:
        return time.time_ns() + self.offset_ns

    def upload(self, n: int) -> str:
        return stage_upload(self.store, APP, encode(upload_profile(n)), clock=self.clock)

    def delete(self) -> None:
        mark_deleted(self.store, APP)  # ordered by the store: no clock to give


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "file":
        blob_store = open_store(str(tmp_path / "blobs"))
    else:
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        with pytest.MonkeyPatch.context() as env:
            for name, value in server.credentials_env().items():
                env.setenv(name, value)
            blob_store = open_store(server.url(f"clocks-{uuid.uuid4().hex[:12]}"))
    try:
        yield blob_store
    finally:
        blob_store.close()


def merge_and_clean(store: BlobStore) -> dict[str, int]:
    """What the flows do after a delete and an upload: the cascade, then the merge; the merged counts."""
    delete_app(store, APP, lock_timeout=0)
    merge_pending(store, APP, recover_after=timedelta(0))
    return counts(merged_profile(store)) if has_data(store, APP) else {}


def test_deletes_order_uploads_whatever_the_servers_clocks(store: BlobStore) -> None:
    ahead, behind = Server(store, SKEW_NS), Server(store, -SKEW_NS)

    ahead.upload(0)
    behind.upload(1)
    merge_pending(store, APP)
    ahead.upload(2)  # staged, not merged yet
    behind.upload(3)
    behind.delete()  # answered: 0 to 3 are gone for good
    assert not has_data(store, APP)

    behind.upload(4)
    ahead.upload(5)
    assert merge_and_clean(store) == {"main.upload4": 1, "main.upload5": 1}
    behind.upload(6)
    ahead.delete()  # answered: 4 to 6 are gone
    assert not has_data(store, APP)

    behind.upload(7)
    ahead.upload(8)
    assert merge_and_clean(store) == {"main.upload7": 1, "main.upload8": 1}
