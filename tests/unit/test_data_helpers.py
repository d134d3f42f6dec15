"""Pure helpers of the data stages: key safety, source parsing, fingerprints, image checks,
MindRecord sizing. No network, no MindSpore."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from irv2_core.data.image_folders import DataSplit, Item, mindrecord_sizes
from irv2_core.data.images import BadImage, is_image_name, prepare_image
from irv2_core.data.sources import SourceObject, parse_source
from irv2_core.data.stage import check_key, fingerprint
from irv2_core.errors import Irv2Error
from irv2_core.storage.s3client import redact_url


@pytest.mark.parametrize(
    "rel, why",
    [
        ("../x.jpg", "'..'"),
        ("a/../../x.jpg", "'..'"),
        ("/etc/passwd", "absolute"),
        ("a//b.jpg", "empty"),
        ("./a.jpg", "'.'"),
        ("manifest.json", "reserved"),
        ("a/.irv2part-0011", "reserved"),
        ("x" * 256 + ".jpg", "longer than"),
    ],
)
def test_check_key_rejects_keys_that_escape_or_collide(rel, why):
    assert why in check_key(rel)


@pytest.mark.parametrize("rel", ["cat/a.jpg", "ü ñ/space name.JPEG", "a/manifest.json", "..a.jpg"])
def test_check_key_accepts_ordinary_and_unicode_keys(rel):
    assert check_key(rel) is None


def test_parse_source_forms():
    assert parse_source("s3://bkt") == ("s3", "bkt", "")
    assert parse_source("s3://bkt/data") == ("s3", "bkt", "data/")  # a prefix is a folder
    assert parse_source("s3://bkt/data/") == ("s3", "bkt", "data/")
    assert parse_source("file:///tmp/my%20set") == ("local", "/tmp/my set", "")
    assert parse_source("rel/dir") == ("local", "rel/dir", "")
    for bad in ("s3://", "gs://bkt/x", "file://otherhost/x"):
        with pytest.raises(Irv2Error):
            parse_source(bad)


def test_fingerprint_is_order_free_and_sensitive_to_each_field():
    a = [SourceObject("p/a", "a", 1, "e1"), SourceObject("p/b", "b", 2, "e2")]
    base = fingerprint(a)
    assert fingerprint(list(reversed(a))) == base
    assert fingerprint([SourceObject("q/a", "a", 1, "e1"), a[1]]) == base  # prefix-independent
    assert fingerprint([SourceObject("p/a", "a", 1, "e9"), a[1]]) != base
    assert fingerprint([SourceObject("p/a", "a", 3, "e1"), a[1]]) != base
    assert fingerprint([SourceObject("p/c", "c", 1, "e1"), a[1]]) != base


def test_redact_url_drops_embedded_credentials():
    assert redact_url("http://AKIA:s3cr3t@minio:9000/") == "http://minio:9000/"
    assert redact_url("https://obs.example.com") == "https://obs.example.com"


def _jpeg(mode: str = "RGB", size=(16, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, "JPEG")
    return buf.getvalue()


def test_prepare_image_keeps_good_jpegs_and_names_what_it_fixed():
    good = _jpeg()
    assert prepare_image(good) == (good, "as-is")
    assert prepare_image(good, full_decode=True) == (good, "as-is")
    out, how = prepare_image(_jpeg("L"))
    assert how == "grayscale" and Image.open(io.BytesIO(out)).mode == "RGB"
    assert prepare_image(_jpeg("CMYK"))[1] == "cmyk"
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(buf, "PNG")
    assert prepare_image(buf.getvalue())[1] == "16-bit+png"
    assert is_image_name("a/B.JPEG") and is_image_name("x.Png") and not is_image_name("n.txt")
    assert not is_image_name(".hidden.jpg")


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "empty"),
        (b"<html><body>Not Found</body></html>", "HTML"),
        (b"\x00\x01\x02\x03 binary junk", "unrecognised"),
    ],
)
def test_prepare_image_rejects_non_images_with_a_reason(data, why):
    with pytest.raises(BadImage, match=why):
        prepare_image(data)


def test_prepare_image_rejects_truncated_jpeg_and_png():
    with pytest.raises(BadImage, match="truncated"):
        prepare_image(_jpeg()[:-10])
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "PNG")
    with pytest.raises(BadImage, match="truncated|corrupt|decoded"):
        prepare_image(buf.getvalue()[:-30])


def _split(*groups: tuple[int, int]) -> DataSplit:
    """A split of ``count`` images of ``size`` bytes per group (one shared Item per group)."""
    items = []
    for count, size in groups:
        items += [Item(None, "c/x.jpg", "c", 0, size)] * count  # type: ignore[arg-type]
    return DataSplit("train", None, ["c"], items)  # type: ignore[arg-type]


def test_mindrecord_sizes_fit_the_largest_image_and_stay_small_for_small_sets():
    header, page = mindrecord_sizes(_split((20, 5_000)), shards=1)
    assert (header, page) == (64 << 10, 1 << 20)  # not MindRecord's 16 MiB / 32 MiB defaults
    header, page = mindrecord_sizes(_split((10, 100_000), (1, 3_000_000)), shards=1)
    assert page >= 4 * 3_000_000 and page & (page - 1) == 0
    # ImageNet-scale: 1.28 M images of ~110 KB: the header must have room for every page.
    header, page = mindrecord_sizes(_split((1_281_167, 110_000)), shards=8)
    pages_per_shard = 110_000 * 1_281_167 / 8 / page
    assert header >= 200 * pages_per_shard and header <= 128 << 20
