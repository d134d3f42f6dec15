"""Publishing outputs: whole files and whole folders appear at once, readable like any other."""

from __future__ import annotations

from irv2_core.runtime.io import FILE_MODE, atomic_write_json, publish_dir, read_json


def test_atomic_writes_are_readable_like_plain_files(tmp_path):
    """Published JSON (manifests, records) must not come out 0600 like mkstemp's temp files."""
    target = atomic_write_json(tmp_path / "m.json", {"a": 1})
    assert read_json(target) == {"a": 1}
    assert target.stat().st_mode & 0o777 == FILE_MODE
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_publish_dir_replaces_an_old_folder_only_once_the_new_one_is_whole(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    new = tmp_path / ".out.tmp-1"
    new.mkdir()
    (new / "new.txt").write_text("new")
    publish_dir(new, dest)
    assert [p.name for p in dest.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp or old copy left
