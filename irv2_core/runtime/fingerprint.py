"""One fingerprint of the library's own source code, over whole subpackages.

The training cache key and the compile-cache scope both need "has the code that shapes this
result changed?". Hashing whole subpackages (every ``.py`` under them, by relative path and
content) means a new, moved or renamed file changes the fingerprint too; a part that does not
exist is an error, never silently skipped.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from irv2_core.runtime.io import sha256_json

__all__ = ["PACKAGE_ROOT", "TRAINING_CODE", "code_fingerprint", "training_code_version"]

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the irv2_core folder
# What shapes a trained model: the network, the data pipeline, the recipe and loop, the config.
TRAINING_CODE = ("models", "data", "training", "runtime", "config.py")


def code_fingerprint(parts: tuple[str, ...] = ("",), root: Path = PACKAGE_ROOT) -> str:
    """sha256 over the sources of *parts* (subpackage folders or files of ``irv2_core``; ``""``
    is the whole package). Raises FileNotFoundError naming a part that does not exist. About a
    millisecond for the whole package, so it is not memoised: an edit is always seen."""
    h = hashlib.sha256()
    for part in sorted(parts):
        base = root / part
        if not base.exists():
            raise FileNotFoundError(f"code fingerprint: irv2_core/{part} does not exist")
        files = [base] if base.is_file() else sorted(base.rglob("*.py"))
        for path in files:
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def training_code_version() -> str:
    """Digest of the training code: the package version plus every source of the subpackages
    that shape a trained model (:data:`TRAINING_CODE`). Part of the training cache key."""
    from irv2_core import __version__  # the package's, set after its imports

    return sha256_json([__version__, code_fingerprint(TRAINING_CODE)])
