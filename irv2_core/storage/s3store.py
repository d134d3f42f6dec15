"""An S3 prefix (AWS S3, MinIO, Huawei OBS) as an object store.

Uploads carry a CRC32 checksum that the server verifies (per part for multipart uploads through
boto3's transfer manager) and record the whole file's sha256 as object metadata; downloads are
hashed against the sha256 the caller expects. ``create`` is a conditional
PUT (``If-None-Match: *``, or ``If-Match: <etag>`` to take over a known version), which S3 runs
atomically: of two writers, exactly one wins.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from irv2_core.errors import Irv2Error
from irv2_core.runtime.io import atomic_target, sha256_file
from irv2_core.storage.s3client import S3Client, max_attempts
from irv2_core.storage.store import StoredObject, check_digest, join_key

__all__ = ["MULTIPART_THRESHOLD", "S3Store"]

MULTIPART_THRESHOLD = 64 << 20
_PRECONDITION = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
# If-Match on a key that is gone: AWS answers 404 NoSuchKey, SeaweedFS 412. Either way the
# version to replace is no longer there, so the write lost.
_GONE = ("NoSuchKey", "404")


class S3Store:
    """``s3://bucket/prefix``: keys live under the prefix."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None, workers: int = 8):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.s3 = S3Client(endpoint_url, workers)
        self.client = self.s3.client
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=16 << 20,
            max_concurrency=workers,
            num_download_attempts=max_attempts(),
        )

    def _key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def _error(self, exc: Exception, what: str, key: str = "") -> Irv2Error:
        return self.s3.explain(exc, what, f"{self.uri}/{key}".rstrip("/"), self.bucket)

    def put_file(self, path: Path, key: str, sha256: str | None = None) -> StoredObject:
        digest = sha256 or sha256_file(path)
        # CRC32 (cheap, verified by the server per part) guards the transfer; the whole file's
        # sha256 rides along as metadata and in the commit marker, checked on every download
        extra = {"ChecksumAlgorithm": "CRC32", "Metadata": {"sha256": digest}}
        try:
            self.client.upload_file(
                str(path), self.bucket, self._key(key), ExtraArgs=extra, Config=self.transfer
            )
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "uploading", key) from None
        size = int(head["ContentLength"])
        if size != path.stat().st_size or head.get("Metadata", {}).get("sha256") != digest:
            raise Irv2Error(f"upload of {path} to {self.uri}/{key} did not verify; try again")
        return StoredObject(key, size, digest, head["ETag"])

    def get_file(self, key: str, path: Path, sha256: str | None = None) -> Path:
        # a temp name of its own: ranks on one shared run folder may fetch the same file at once
        with atomic_target(path, suffix=".download") as tmp:
            try:
                self.client.download_file(
                    self.bucket, self._key(key), str(tmp), Config=self.transfer
                )
            except (ClientError, BotoCoreError) as exc:
                raise self._error(exc, "downloading", key) from None
            check_digest(tmp, sha256, f"{self.uri}/{key}")
        return path

    def put_bytes(self, data: bytes, key: str) -> StoredObject:
        return self._put(data, key, {})

    def _put(self, data: bytes, key: str, condition: dict[str, str]) -> StoredObject:
        resp = self.client.put_object(
            Bucket=self.bucket,
            Key=self._key(key),
            Body=data,
            ChecksumAlgorithm="SHA256",
            **condition,
        )
        return StoredObject(key, len(data), None, resp["ETag"])

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._error(exc, "reading", key) from None
        except BotoCoreError as exc:
            raise self._error(exc, "reading", key) from None

    def create(self, data: bytes, key: str, replace: str | None = None) -> StoredObject | None:
        condition = {"IfMatch": replace} if replace else {"IfNoneMatch": "*"}
        try:
            return self._put(data, key, condition)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in _PRECONDITION or (replace and code in _GONE):
                return None
            raise self._error(exc, "writing", key) from None

    def head(self, key: str) -> StoredObject | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._error(exc, "reading", key) from None
        sha = head.get("Metadata", {}).get("sha256")
        return StoredObject(key, int(head["ContentLength"]), sha, head["ETag"])

    def list(self, prefix: str) -> list[StoredObject]:
        out = []
        start = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for o in page.get("Contents", []):
                    out.append(StoredObject(o["Key"][start:], int(o["Size"]), None, o["ETag"]))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "listing", prefix) from None
        return sorted(out, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "deleting", key) from None

    def check_writable(self) -> None:
        probe = join_key(".irv2-preflight", f"probe-{uuid.uuid4().hex}")
        try:
            self.put_bytes(b"ok", probe)
            honoured = self.create(b"again", probe) is None  # If-None-Match on an existing key
            self.delete(probe)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "writing", probe) from None
        if not honoured:
            raise Irv2Error(
                f"{self.uri} ignores conditional writes (If-None-Match): two workers could both "
                "take one lease or promote at once; use a store that honours them (AWS S3, "
                "MinIO, OBS, SeaweedFS) or a folder with file locks"
            )
