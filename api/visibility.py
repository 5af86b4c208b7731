"""Which merged profiles the API may serve: none that a deletion hides.

Deleting an app advances its generation (``profiling.pipeline.deletion.mark_deleted``)
and leaves the removal to a flow; from then on a merged profile of an older
generation must not be served, nor listed (``profiling/pipeline/generations.py``
explains generations). A profile's generation is in its comments, and reading
them means parsing the profile, so they are remembered per version (etag) of
each app's merged profile; the app's generation costs one read of a small
record; a profile is not read for this while its app was never deleted.
"""

from __future__ import annotations

from collections.abc import Callable

from profiling.errors import ProfileError
from profiling.pipeline import AppGeneration, Labels, labels_of, read_app_generation
from profiling.storage import BlobInfo, BlobStore

from .versions import PerVersion


class Visibility:
    """Whether a delete hides a merged profile, with each profile's labels remembered per version."""

    def __init__(self, store: BlobStore, max_decompressed: int, max_apps: int = 1024) -> None:
        self._store = store
        self._max_decompressed = max_decompressed
        self._labels: PerVersion[Labels] = PerVersion(max_apps)

    def generation(self, app: str) -> AppGeneration:
        """The app's generation now."""
        return read_app_generation(self._store, app)

    def hidden(
        self, app: str, info: BlobInfo, generation: AppGeneration, load: Callable[[], bytes] | None = None
    ) -> bool:
        """Whether a delete hides the merged profile ``info`` in the app's ``generation``.

        ``load`` gives its bytes if its labels are not known yet (by default they
        are read from the store). A profile whose labels cannot be read counts
        as from before any delete.
        """
        if generation.number == 0 and load is None and self._labels.get(app, info.etag) is None:
            # Never deleted since generations: only a tombstone from before them
            # could hide the profile, and without one it need not be read.
            if not generation.legacy_tombstone():
                return False
        return self._labels_of(app, info, load).hidden_in(generation)

    def labels(self, app: str, info: BlobInfo, load: Callable[[], bytes] | None = None) -> Labels:
        """What the comments of the merged profile ``info`` say (read once per version)."""
        return self._labels_of(app, info, load)

    def _labels_of(self, app: str, info: BlobInfo, load: Callable[[], bytes] | None) -> Labels:
        known = self._labels.get(app, info.etag)
        if known is not None:
            return known
        etag = info.etag
        if load is not None:
            data = load()
        else:
            read_info, stream = self._store.open(info.key)
            with stream:
                data = stream.read()
            etag = read_info.etag
        try:
            labels = labels_of(data, self._max_decompressed)
        except ProfileError:
            labels = Labels()
        return self._labels.put(app, etag, labels)
