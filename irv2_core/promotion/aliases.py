"""Names for a deployment's models: ``champion`` is the model in service (``current.json``),
``challenger`` the newest candidate that was not put in service, and any other alias a person
sets (``irv2 models alias``). The names live in ``models/<deployment>/aliases.json``, changed
through a conditional write like the model in service, so two writers never lose a change.

A serving job loads a deployment's model by name (``resolve``); a person puts a named model in
service with ``irv2 models serve <deployment> <alias>``.
"""

from __future__ import annotations

import json
import random
import re
import time

from irv2_core.errors import Irv2Error
from irv2_core.lineage import AliasBook, ServiceEntry, ServiceRecord
from irv2_core.promotion.service import promote, read_current
from irv2_core.storage.store import ObjectStore

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "aliases_key",
    "check_alias",
    "read_aliases",
    "resolve",
    "rollback",
    "serve",
    "set_alias",
]

CHAMPION, CHALLENGER = "champion", "challenger"
_NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")
_PATIENCE_S = 60.0  # retrying a conditional write that others keep winning, then an error


def aliases_key(deployment: str) -> str:
    """Where *deployment*'s aliases live in the store."""
    return f"models/{deployment}/aliases.json"


def check_alias(name: str) -> str:
    """*name* if it can be set (lower-case letters, digits, dashes; not ``champion``)."""
    if not _NAME.fullmatch(name):
        raise Irv2Error(
            f"alias {name!r}: use 1-40 lower-case letters, digits or dashes, starting with a letter"
        )
    if name == CHAMPION:
        raise Irv2Error(
            "alias 'champion' always names the model in service: put a model in service with "
            "`irv2 models serve` (or let the flow promote it) instead"
        )
    return name


def read_aliases(store: ObjectStore, deployment: str) -> tuple[AliasBook, str | None]:
    """The aliases of *deployment* (``champion`` not among them) and the file's version."""
    head = store.head(aliases_key(deployment))
    data = store.get_bytes(aliases_key(deployment)) if head else None
    if not data:
        return AliasBook(), None
    return AliasBook.model_validate(json.loads(data)), head.version


def resolve(store: ObjectStore, deployment: str, name: str) -> ServiceEntry | None:
    """The model *name* stands for in *deployment*: ``champion``, another alias, or a run id
    that is or was in service; None when it names none."""
    current, _ = read_current(store, deployment)
    if name == CHAMPION:
        return current.change() if current else None
    entry = read_aliases(store, deployment)[0].aliases.get(name)
    if entry is not None or current is None:
        return entry
    return current.change() if current.run_id == name else current.find(name)


def set_alias(
    store: ObjectStore, deployment: str, name: str, entry: ServiceEntry | None
) -> ServiceEntry | None:
    """Point *name* at *entry* (None: remove it); returns what it named before. Conditional
    writes, retried on a concurrent change: no writer's change is lost."""
    check_alias(name)
    if entry is not None:
        entry = entry.entry()
    deadline, pause = time.monotonic() + _PATIENCE_S, 0.01
    while True:
        book, version = read_aliases(store, deployment)
        aliases = dict(book.aliases)
        before = aliases.pop(name, None)
        if entry is None and before is None:
            return None  # nothing to remove
        if entry is not None:
            aliases[name] = entry
        data = json.dumps(AliasBook(aliases=aliases).file_content(), indent=2, sort_keys=True)
        if store.create(data.encode(), aliases_key(deployment), replace=version) is not None:
            return before
        if time.monotonic() > deadline:
            break
        time.sleep(random.uniform(0, pause))  # jitter: writers that collided spread out
        pause = min(pause * 2, 1.0)
    raise Irv2Error(f"{deployment}: aliases kept changing for {_PATIENCE_S:g} s; set {name} again")


def serve(store: ObjectStore, deployment: str, name: str, by: str = "person") -> ServiceRecord:
    """Put the model *name* names (an alias, or a run that was in service) in service through
    the model in service's conditional write; the new record. Raises Irv2Error, naming what is
    known, when *name* names no model, or when another change came first."""
    current, version = read_current(store, deployment)
    entry = resolve(store, deployment, name)
    if entry is None:
        known = [CHAMPION] if current else []
        known += sorted(read_aliases(store, deployment)[0].aliases)
        known += [e.run_id for e in current.history] if current else []
        raise Irv2Error(
            f"{deployment}: {name} is neither an alias nor a run that was in service "
            f"(known: {', '.join(known) or 'none'})"
        )
    if current is not None and entry.run_id == current.run_id:
        raise Irv2Error(f"{deployment}: {name} ({entry.run_id}) is already in service")
    was_in_service = current is not None and current.find(entry.run_id) is not None
    replacing = f"replacing {current.run_id}" if current else "with none in service"
    record = ServiceRecord.model_validate(
        {
            **entry.model_dump(),
            "decided_by": by,
            "decision": "rollback" if was_in_service else "manual",
            "reason": f"{name} put back in service, {replacing}"
            if was_in_service
            else f"{name} put in service by hand, {replacing}",
        }  # fmt: skip
    )
    if promote(store, deployment, record, version) is None:
        raise Irv2Error(f"{deployment}: the model in service changed meanwhile; try again")
    return read_current(store, deployment)[0]


def rollback(
    store: ObjectStore, deployment: str, run_id: str | None = None, by: str = "person"
) -> ServiceRecord:
    """Put the model in service before this one back (or *run_id*, or an alias's model)."""
    current, _ = read_current(store, deployment)
    if run_id is None:
        if current is None or not current.history:
            raise Irv2Error(f"{deployment}: no earlier model in the history to roll back to")
        run_id = current.history[0].run_id
    return serve(store, deployment, run_id, by)
