"""What every flow run needs: the configuration and the blob store it names.

Flow runs find ``autopgo.yaml`` through ``AUTOPGO_CONFIG``, set by ``autopgo up``
or by the worker's environment; without it, ``./autopgo.yaml`` if there is one,
else the defaults.
"""

from __future__ import annotations

import os

from profiling.blobs import BlobStore
from profiling.config import Config, find_config
from profiling.stores import open_store

CONFIG_ENV = "AUTOPGO_CONFIG"


def config() -> Config:
    return find_config(os.environ.get(CONFIG_ENV) or None)[0]


def store(cfg: Config) -> BlobStore:
    return open_store(cfg.blob_store)
