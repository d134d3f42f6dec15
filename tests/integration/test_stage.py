"""stage against a real S3 server (SeaweedFS) and a local folder: mirrored bytes,
manifest, incremental restage, deletions, hostile keys, readable errors, retries, resume."""

from __future__ import annotations

import hashlib
import http.client
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.data_cases import awkward_tree, upload_tree, write_tree
from support.seaweedfs import S3_CREDENTIALS

from irv2_core.cli import main
from irv2_core.data import s3 as stage_s3
from irv2_core.data.stage import source_fingerprint, stage
from irv2_core.errors import Irv2Error
from irv2_core.runtime.io import read_json, sha256_file
from irv2_core.storage.s3client import S3Client

PREFIX = "imgs/"
HOSTILE = {
    "imgs/../escape.jpg": "'..'",
    "imgs//abs.jpg": "absolute",
    "imgs/manifest.json": "reserved",
}


@pytest.fixture
def bucket(s3_client) -> str:
    name = f"stage-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """rel path -> (inode, mtime_ns) of every file except the manifest: proves nothing moved."""
    return {
        p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }


def test_stage_s3_mirrors_verifies_and_restages_incrementally(
    s3_server, s3_client, bucket, tmp_path
):
    files = awkward_tree()
    upload_tree(s3_client, bucket, PREFIX, files)
    s3_client.put_object(Bucket=bucket, Key=PREFIX + "cat/", Body=b"")  # folder marker
    dest = tmp_path / "staged"

    result = stage(f"s3://{bucket}/imgs", dest, endpoint_url=s3_server, workers=4)

    assert result.objects == len(files) and result.downloaded == len(files)
    assert result.bytes == sum(len(b) for b in files.values())
    assert result.folder_markers == 1 and not result.rejected
    manifest = read_json(dest / "manifest.json")
    assert manifest["objects"].keys() == files.keys()  # nothing else (the folder marker)
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
        entry = manifest["objects"][rel]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size"] == len(data)
        assert entry["verified"] == "md5"  # single-part uploads: ETag is the MD5
    assert manifest["fingerprint"] == result.fingerprint
    assert source_fingerprint(f"s3://{bucket}/imgs/", endpoint_url=s3_server) == result.fingerprint
    assert not list(dest.rglob(".irv2part-*"))

    before = _snapshot(dest)
    again = stage(f"s3://{bucket}/imgs", dest, endpoint_url=s3_server)
    assert (again.downloaded, again.unchanged) == (0, len(files))
    assert again.fingerprint == result.fingerprint
    assert _snapshot(dest) == before  # not rewritten: same inodes and mtimes

    s3_client.put_object(Bucket=bucket, Key=PREFIX + "cat/good_0.jpg", Body=files["dog/good_2.jpg"])
    s3_client.delete_object(Bucket=bucket, Key=PREFIX + "fish/notes.txt")
    s3_client.put_object(Bucket=bucket, Key=PREFIX + "new/added.jpg", Body=b"new")
    third = stage(f"s3://{bucket}/imgs", dest, endpoint_url=s3_server)
    assert (third.downloaded, third.removed) == (2, 1)
    assert (dest / "cat/good_0.jpg").read_bytes() == files["dog/good_2.jpg"]
    assert (
        not (dest / "fish/notes.txt").exists() and (dest / "new/added.jpg").read_bytes() == b"new"
    )
    assert third.fingerprint != result.fingerprint
    assert third.fingerprint == read_json(dest / "manifest.json")["fingerprint"]


def test_stage_s3_rejects_hostile_keys(moto_s3_server, tmp_path):
    """Keys with '..', an empty segment or the manifest's name are valid on AWS. SeaweedFS
    refuses '..' and folds '//' into '/', so it cannot hold them: moto stores them verbatim as
    AWS does, which is the point of using the mock here."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_s3_server, region_name="us-east-1")
    name = f"hostile-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    files = {"cat/a.jpg": b"a", "dog/b.jpg": b"b"}
    upload_tree(client, name, PREFIX, files)
    for key in HOSTILE:
        client.put_object(Bucket=name, Key=key, Body=b"must never be written")
    dest = tmp_path / "staged"

    result = stage(f"s3://{name}/imgs", dest, endpoint_url=moto_s3_server)

    assert {r.key: r.reason for r in result.rejected}.keys() == HOSTILE.keys()
    for r in result.rejected:
        assert HOSTILE[r.key] in r.reason
    assert not (tmp_path / "escape.jpg").exists() and not Path("/abs.jpg").exists()
    manifest = read_json(dest / "manifest.json")
    assert manifest["objects"].keys() == files.keys()
    assert manifest["fingerprint"] == result.fingerprint  # the manifest is ours, not the key's


def test_stage_s3_errors_say_which_and_never_leak_the_secret(
    s3_server, s3_client, bucket, tmp_path, monkeypatch
):
    with pytest.raises(Irv2Error, match="does not exist"):
        stage("s3://no-such-bucket-here/x", tmp_path / "a", endpoint_url=s3_server)
    s3_client.put_object(Bucket=bucket, Key="real/a.jpg", Body=b"x")
    with pytest.raises(Irv2Error, match="no objects under .*real/") as exc:
        stage(f"s3://{bucket}/wrong", tmp_path / "b", endpoint_url=s3_server)
    assert "check the prefix" in str(exc.value)

    # the server checks signatures: a known key with a wrong secret, then an unknown key
    wrong = "wrong-secret-Zq81xP"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    with pytest.raises(Irv2Error, match="credentials") as bad_secret:
        stage(f"s3://{bucket}/real", tmp_path / "c", endpoint_url=s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    with pytest.raises(Irv2Error, match="credentials") as bad_key:
        source_fingerprint(f"s3://{bucket}/real", endpoint_url=s3_server)
    assert "secret access key does not match" in str(bad_secret.value)
    assert "not known" in str(bad_key.value)
    for message in (str(bad_secret.value), str(bad_key.value)):
        assert wrong not in message and S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in message
    assert not (tmp_path / "c" / "manifest.json").exists()


class FlakyProxy:
    """HTTP proxy on 127.0.0.1 in front of the S3 server that misbehaves on purpose.

    The first request for every path gets a 503 (S3 "SlowDown"); the second GET of
    ``truncate_path`` gets its headers but only half its body, then the connection drops;
    with ``fail_after`` set, every GET of an object beyond that many gets a hard 403.
    """

    def __init__(
        self, upstream: str, truncate_path: str | None = None, fail_after: int | None = None
    ):
        self.upstream = upstream.removeprefix("http://")
        self.seen: dict[str, int] = {}
        self.served = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                proxy.handle(self)

            do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.truncate_path, self.fail_after = truncate_path, fail_after
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _reply(self, h, status: int, code: str) -> None:
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        h.send_response(status)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?")[0]
        is_object = path.count("/") >= 2 and h.command == "GET"
        with self.lock:
            n = self.seen[path] = self.seen.get(path, 0) + 1
            if is_object and n > 1:
                self.served += 1
            served = self.served
        if n == 1:
            return self._reply(h, 503, "SlowDown")
        if self.fail_after is not None and is_object and served > self.fail_after:
            return self._reply(h, 403, "AccessDenied")
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        # the client's own Host header goes on: the server checks the signature, which covers it
        conn.request(h.command, h.path, headers=dict(h.headers.items()))
        resp = conn.getresponse()
        body = resp.read()
        h.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection"):
                h.send_header(k, v)
        h.end_headers()
        if path == self.truncate_path and n == 2 and h.command == "GET":
            h.wfile.write(body[: len(body) // 2])
            h.close_connection = True
            return
        h.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_stage_retries_transient_failures_and_gets_exact_bytes(
    s3_server, s3_client, bucket, tmp_path
):
    files = {f"c{i % 2}/img_{i}.jpg": bytes([i]) * (3000 + i) for i in range(6)}
    upload_tree(s3_client, bucket, PREFIX, files)
    proxy = FlakyProxy(s3_server, truncate_path=f"/{bucket}/{PREFIX}c0/img_0.jpg")
    try:
        result = stage(f"s3://{bucket}/imgs", tmp_path / "d", endpoint_url=proxy.url, workers=3)
    finally:
        proxy.close()
    assert result.downloaded == len(files)
    assert proxy.seen[f"/{bucket}/{PREFIX}c0/img_0.jpg"] >= 3  # 503, truncated, then whole
    for rel, data in files.items():
        assert (tmp_path / "d" / rel).read_bytes() == data


def test_interrupted_stage_leaves_only_whole_files_and_next_run_completes(
    s3_server, s3_client, bucket, tmp_path
):
    files = {f"c/img_{i}.jpg": bytes([65 + i]) * 2000 for i in range(6)}
    upload_tree(s3_client, bucket, PREFIX, files)
    dest = tmp_path / "e"
    stale = dest / "c" / ".irv2part-0123456789abcdef"  # what a killed run leaves behind
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    proxy = FlakyProxy(s3_server, fail_after=2)
    try:
        with pytest.raises(Irv2Error, match=r"4 of 6 objects failed.*run stage again"):
            stage(f"s3://{bucket}/imgs", dest, endpoint_url=proxy.url, workers=1)
    finally:
        proxy.close()
    assert not (dest / "manifest.json").exists() and not stale.exists()
    present = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert len(present) == 2
    for rel in present:
        assert (dest / rel).read_bytes() == files[rel]  # whole and correct, never partial

    result = stage(f"s3://{bucket}/imgs", dest, endpoint_url=s3_server)
    assert (result.downloaded, result.unchanged) == (4, 2)  # the two are re-verified, kept
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
    assert read_json(dest / "manifest.json")["objects"].keys() == files.keys()


def test_stage_local_folder_mirrors_incrementally_via_cli(tmp_path, capsys):
    src = write_tree(tmp_path / "src", awkward_tree())
    dest = tmp_path / "mirror"
    assert main(["stage", str(src), str(dest), "--workers", "2"]) == 0
    manifest = read_json(dest / "manifest.json")
    assert manifest["fingerprint"] == source_fingerprint(src.as_uri())
    for rel, entry in manifest["objects"].items():
        assert entry["sha256"] == sha256_file(src / rel) == sha256_file(dest / rel)
    before = _snapshot(dest)
    (src / "fish" / "notes.txt").unlink()
    second = stage(src.as_uri(), dest)
    assert (second.downloaded, second.removed) == (0, 1)
    assert not (dest / "fish" / "notes.txt").exists()
    assert {k: v for k, v in before.items() if k != "fish/notes.txt"} == _snapshot(dest)

    capsys.readouterr()
    assert main(["stage", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    assert "source folder not found" in capsys.readouterr().err
    assert main(["stage", str(src), str(src / "inside")]) == 2


def test_stage_verifies_multipart_etags_and_s3_checksums(
    s3_server, s3_client, bucket, tmp_path, monkeypatch
):
    import io

    from boto3.s3.transfer import TransferConfig

    from irv2_core.data.s3 import S3Source
    from irv2_core.data.sources import SourceObject

    big = bytes(range(256)) * (6 << 12)  # 6 MiB: two upload parts of 5 + 1 MiB
    parts = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    s3_client.upload_fileobj(
        io.BytesIO(big),
        bucket,
        "mp/big.bin",
        Config=parts,
        ExtraArgs={"ChecksumAlgorithm": "SHA256"},
    )
    small = b"abc" * 1000
    s3_client.put_object(Bucket=bucket, Key="mp/small.bin", Body=small, ChecksumAlgorithm="SHA256")
    dest = tmp_path / "mp"

    monkeypatch.setattr(stage_s3, "MULTIPART_THRESHOLD", 4 << 20)  # big.bin: transfer manager
    stage(f"s3://{bucket}/mp", dest, endpoint_url=s3_server)
    objects = read_json(dest / "manifest.json")["objects"]
    assert objects["big.bin"]["verified"] == "md5-multipart"
    assert (dest / "big.bin").read_bytes() == big

    # ETags that are not MD5s (SSE-KMS) fall back to S3's whole-object or per-part checksums.
    source = S3Source(bucket, "mp/", s3_server, workers=1)
    opaque_small = SourceObject("mp/small.bin", "small.bin", len(small), "not-an-md5")
    assert source.verify(opaque_small, dest / "small.bin")["verified"] == "sha256"
    opaque_big = SourceObject("mp/big.bin", "big.bin", len(big), "kms-etag-2")
    sizes = [5 << 20, len(big) - (5 << 20)]
    assert source._checksum(opaque_big, dest / "big.bin", sizes) == "sha256-composite"
    bad = tmp_path / "bad.bin"
    bad.write_bytes(small[:-1] + b"X")
    with pytest.raises(Irv2Error, match="sha256 checksum mismatch"):
        source.verify(opaque_small, bad)
    bad.write_bytes(big[:-1] + b"X")
    real_big = SourceObject("mp/big.bin", "big.bin", len(big), objects["big.bin"]["etag"])
    with pytest.raises(Irv2Error, match="multipart ETag mismatch"):
        source.verify(real_big, bad)


def test_local_links_never_read_outside_the_source(tmp_path):
    src = write_tree(tmp_path / "src", {"train/a/x.jpg": b"inside", "train/b/y.jpg": b"y"})
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"a worker's private file")
    (src / "train" / "a" / "passwd.jpg").symlink_to(outside)
    (src / "train" / "a" / "alias.jpg").symlink_to(src / "train" / "b" / "y.jpg")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "z.jpg").write_bytes(b"z")
    (src / "train" / "c").symlink_to(tmp_path / "elsewhere")
    dest = tmp_path / "dest"

    result = stage(str(src), dest)

    reasons = {item.key.split("src/")[-1]: item.reason for item in result.rejected}
    assert "outside the source folder" in reasons["train/a/passwd.jpg"]
    assert "symbolic link to a folder" in reasons["train/c/"]
    objects = read_json(dest / "manifest.json")["objects"]
    assert sorted(objects) == ["train/a/alias.jpg", "train/a/x.jpg", "train/b/y.jpg"]
    assert (dest / "train" / "a" / "alias.jpg").read_bytes() == b"y"  # a link inside is fine
    assert not (dest / "train" / "a" / "passwd.jpg").exists()
    assert not (dest / "train" / "c").exists()
    staged = b"".join(p.read_bytes() for p in dest.rglob("*") if p.is_file())
    assert b"private" not in staged


def test_the_clients_timestamps_come_from_its_own_parser(s3_server, s3_client, bucket):
    """Issue 24: staging parses S3's timestamps without dateutil (~10 % of its CPU per small
    object). The real server's HTTP date and listing date read as the same aware instant;
    dateutil would have given ``tzutc()``, not ``timezone.utc``."""
    s3_client.put_object(Bucket=bucket, Key="ts/one", Body=b"1")
    client = S3Client(s3_server).client
    head = client.head_object(Bucket=bucket, Key="ts/one")["LastModified"]
    listed = client.list_objects_v2(Bucket=bucket, Prefix="ts/")["Contents"][0]["LastModified"]
    assert head.tzinfo is UTC and listed.tzinfo is UTC
    assert abs(head - listed) < timedelta(seconds=1)
    assert abs(datetime.now(UTC) - head) < timedelta(minutes=10)
