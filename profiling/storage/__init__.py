"""Blob storage: one small protocol (``BlobStore``), a filesystem store and an S3 store, chosen by URL.

``keys.py`` holds the key rules every store enforces; ``etags.py`` the content
tags that downloads and the client agree on. ``S3Store`` is imported only when
it is asked for (as every name here), so a filesystem user never pays for importing boto3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import surface

if TYPE_CHECKING:  # each name is imported from its module when first used (see profiling/lazy.py)
    from .blobs import BlobInfo, BlobStore
    from .etags import content_etag, file_etag
    from .filestore import FileStore
    from .keys import MAX_KEY_BYTES, check_key, check_prefix
    from .s3store import S3Store
    from .stores import DEFAULT_BLOB_STORE, StoreLocation, StoreURLError, open_store, parse_store_url

__all__ = [
    "BlobInfo",
    "BlobStore",
    "DEFAULT_BLOB_STORE",
    "FileStore",
    "MAX_KEY_BYTES",
    "S3Store",
    "StoreLocation",
    "StoreURLError",
    "check_key",
    "check_prefix",
    "content_etag",
    "file_etag",
    "open_store",
    "parse_store_url",
]

__getattr__ = surface(__name__, __file__)
