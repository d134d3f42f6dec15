"""Object storage as the system of record: a small store interface (local folder or S3), verified
uploads and downloads, commit markers that make a published prefix complete, and leases that keep
one writer per run. Used by the stages to publish their outputs and by any worker to find, fetch
and resume them.

- ``store``: the :class:`~irv2_core.storage.store.ObjectStore` interface and the local folder;
- ``s3client`` / ``s3store``: the S3 client (shared with staging) and the S3 prefix;
- ``publish``: verified folder publishing behind a commit marker, and fetching it back;
- ``lease``: one writer per run, locally and in the store.
"""

from __future__ import annotations

from irv2_core.errors import Irv2Error
from irv2_core.storage.s3store import S3Store
from irv2_core.storage.store import LocalStore, ObjectStore

__all__ = ["open_store"]


def open_store(uri: str, endpoint_url: str | None = None) -> ObjectStore:
    """The store at *uri*: ``s3://bucket[/prefix]`` (S3, MinIO, OBS) or a local folder."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise Irv2Error(f"expected s3://bucket[/prefix], got {uri!r}")
        return S3Store(bucket, prefix, endpoint_url)
    return LocalStore(uri.removeprefix("file://"))
