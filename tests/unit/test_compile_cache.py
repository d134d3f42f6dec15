"""MindSpore's compile cache trusts only the entry script's imports; our scope adds the code."""

from __future__ import annotations

from irv2_core.runtime.compile_cache import _code_fingerprint


def test_an_edited_source_file_changes_the_cache_scope(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__main__.py").write_text("from pkg import cli\n")
    block = pkg / "models" / "net.py"
    block.write_text("SCALE = 0.17\n")
    before = _code_fingerprint(pkg)
    assert _code_fingerprint(pkg) == before  # stable while nothing changes
    block.write_text("SCALE = 0.10\n")  # the entry script's imports are unchanged
    assert _code_fingerprint(pkg) != before
