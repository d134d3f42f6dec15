"""Where Prefect keeps task results and cache records: beside the outputs, in the object store.

The store's layout is ``irv2_core.storage.layout``; publishing to it is
``irv2_core.storage.outputs``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect.filesystems import LocalFileSystem
from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

from irv2_core.storage.layout import PREFECT_RESULTS
from irv2_core.storage.publish import StoreRef
from irv2_core.storage.store import join_key

__all__ = ["result_storage"]


def result_storage(ref: StoreRef) -> Any:
    """A saved Prefect storage block for ``<output_uri>/prefect``: persisted task results and
    cache records live beside the outputs, so workers that share only the store share the cache.
    Saved under a name derived from the URI (Prefect requires result storage to be a saved
    block); S3 credentials come from the standard AWS chain, never from the block."""
    uri, endpoint = ref["uri"], ref.get("endpoint_url")
    name = "irv2-results-" + hashlib.sha256(f"{uri}|{endpoint}".encode()).hexdigest()[:12]
    if not uri.startswith("s3://"):
        block = LocalFileSystem(basepath=str(Path(uri.removeprefix("file://")) / PREFECT_RESULTS))
        block.save(name, overwrite=True)
        return block
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    credentials = AwsCredentials(aws_client_parameters=AwsClientParameters(endpoint_url=endpoint))
    credentials.save(name, overwrite=True)
    block = S3Bucket(
        bucket_name=bucket,
        bucket_folder=join_key(prefix, PREFECT_RESULTS),
        credentials=credentials,
    )
    block.save(name, overwrite=True)
    return block
