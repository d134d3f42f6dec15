"""The code fingerprint behind the training cache key and the compile-cache scope."""

from __future__ import annotations

import pytest

from irv2_core.runtime.fingerprint import PACKAGE_ROOT, TRAINING_CODE, code_fingerprint
from irv2_core.runtime.fingerprint import training_code_version as code_version


@pytest.fixture
def pkg(tmp_path):
    root = tmp_path / "pkg"
    (root / "models").mkdir(parents=True)
    (root / "training").mkdir()
    (root / "__main__.py").write_text("from pkg import cli\n")
    (root / "models" / "net.py").write_text("SCALE = 0.17\n")
    (root / "training" / "loop.py").write_text("STEPS = 1\n")
    return root


def test_an_edited_source_changes_the_fingerprint(pkg):
    before = code_fingerprint(("models",), pkg)
    assert code_fingerprint(("models",), pkg) == before  # stable while nothing changes
    (pkg / "models" / "net.py").write_text("SCALE = 0.10\n")  # the entry script is unchanged
    assert code_fingerprint(("models",), pkg) != before


def test_a_new_or_renamed_file_changes_the_fingerprint(pkg):
    before = code_fingerprint(("models", "training"), pkg)
    (pkg / "training" / "loop.py").rename(pkg / "training" / "train_loop.py")
    renamed = code_fingerprint(("models", "training"), pkg)
    assert renamed != before
    (pkg / "training" / "extra.py").write_text("X = 1\n")
    assert code_fingerprint(("models", "training"), pkg) != renamed


def test_parts_outside_the_fingerprint_do_not_change_it(pkg):
    before = code_fingerprint(("models",), pkg)
    (pkg / "training" / "loop.py").write_text("STEPS = 2\n")
    assert code_fingerprint(("models",), pkg) == before


def test_a_missing_part_is_an_error_not_skipped(pkg):
    with pytest.raises(FileNotFoundError, match="irv2_core/evaluate.py"):
        code_fingerprint(("models", "evaluate.py"), pkg)


def test_the_training_code_exists_and_keys_the_training_cache():
    assert all((PACKAGE_ROOT / part).exists() for part in TRAINING_CODE)
    assert code_fingerprint(TRAINING_CODE) != code_fingerprint(("models",))
    assert len(code_version()) == 64
