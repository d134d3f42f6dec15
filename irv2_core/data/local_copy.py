"""A worker's own copy of the data a stage reads: the staged images and the MindRecord folder.

A worker that takes a stage over from another (Prefect workers come and go) may hold neither:
these bring them here, each checked by its fingerprint first so a folder that already holds the
right data is used as it is.
"""

from __future__ import annotations

from pathlib import Path

from irv2_core.data.convert import RECORD_NAME
from irv2_core.data.stage import stage
from irv2_core.errors import Irv2Error
from irv2_core.runtime.io import read_json
from irv2_core.storage.publish import ensure_local
from irv2_core.storage.store import ObjectStore

__all__ = ["conversion_fingerprint", "ensure_conversion", "ensure_staged"]


def _fingerprint(path: Path) -> str | None:
    return read_json(path).get("fingerprint") if path.is_file() else None


def conversion_fingerprint(folder: str | Path) -> str | None:
    """The fingerprint of the MindRecord conversion in *folder* (None: no conversion.json)."""
    return _fingerprint(Path(folder) / RECORD_NAME)


def ensure_staged(
    data_dir: str | Path, fingerprint: str, source: str | None, endpoint_url: str | None = None
) -> bool:
    """*data_dir* holding the staged data *fingerprint*, staged from *source* when it does not;
    True when it had to be staged here."""
    if _fingerprint(Path(data_dir) / "manifest.json") == fingerprint:
        return False
    if source is None:
        raise Irv2Error(f"{data_dir} does not hold the staged data {fingerprint[:12]}")
    stage(source, data_dir, endpoint_url=endpoint_url)
    return True


def ensure_conversion(
    store: ObjectStore | None, prefix: str | None, folder: Path, fingerprint: str
) -> Path:
    """*folder* holding the MindRecord conversion *fingerprint*: as it is when its
    conversion.json says so, else fetched (verified) from the store's *prefix*."""
    if conversion_fingerprint(folder) == fingerprint:
        return folder
    if store is None or prefix is None:
        raise Irv2Error(f"{folder} does not hold the MindRecord conversion {fingerprint[:12]}")
    return ensure_local(store, prefix, folder)
