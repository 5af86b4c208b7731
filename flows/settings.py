"""What every flow run needs: the configuration and the blob store it names.

Flow runs find ``autopgo.yaml`` through ``AUTOPGO_CONFIG`` (default
``./autopgo.yaml``), set by ``autopgo up`` or by the worker's environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from profiling.blobs import BlobStore
from profiling.config import Config, load_config
from profiling.stores import open_store

CONFIG_ENV = "AUTOPGO_CONFIG"


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV, "autopgo.yaml")).resolve()


def config() -> Config:
    return load_config(config_path())


def store(cfg: Config) -> BlobStore:
    return open_store(cfg.blob_store)
