"""Prefect's side of "already done": one cache policy for every heavy stage.

A stage declares its output once (``irv2_core.storage.outputs.StageOutput``, made from the task's
parameters by the stage's ``declare`` function); :class:`StagePolicy` turns that declaration into
the task's cache key, and the task body hands the same declaration to ``produce_once``:

- without a store, the key is the local output's stamped key while the output is intact, else
  a fresh one (``irv2_core.storage.stamps``): a deleted or changed output is made again;
- with a store, the key is the same on every worker (one worker's result is another's cache
  hit), unless Prefect holds a result for this content while the store lost the publication:
  then a fresh key, so the task runs again and publishes again.

Every key ends with the schema digest of the record the task returns (``tasks.common``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from irv2_core.runtime.io import sha256_json
from irv2_core.storage.outputs import StageOutput, committed
from irv2_core.storage.publish import open_ref
from irv2_core.storage.stamps import local_key
from irv2_core.storage.store import ObjectStore
from tasks.common import for_record

__all__ = ["StagePolicy", "current_cache_key", "output_key", "store_cache_key"]


def current_cache_key() -> str | None:
    """The cache key of the running task (the key of its Prefect transaction), if any."""
    from prefect.transactions import get_transaction

    txn = get_transaction()
    return txn.key if txn is not None else None


def store_cache_key(
    ctx: TaskRunContext, store: ObjectStore, prefix: str | None, content: Any, record: type
) -> str:
    """Cache key of a task that publishes to *prefix* of the object store (see the module).
    An output that is never published (*prefix* None) keys on its content alone."""
    digest = sha256_json(content)
    key = for_record(digest, record)
    if prefix is None or committed(store, prefix, digest) or not ctx.result_store.exists(key):
        return key
    return for_record(f"{digest}-{uuid.uuid4().hex[:16]}", record)


def output_key(ctx: TaskRunContext | None, out: StageOutput, store: ObjectStore | None) -> str:
    """The cache key of producing *out*, with or without a *store* (see the module)."""
    if store is not None:
        return store_cache_key(ctx, store, out.prefix, dict(out.content), out.record)
    return for_record(local_key(out.anchor, out.local_content()), out.record)


@dataclass
class StagePolicy(CachePolicy):
    """The cache policy of a heavy stage task: *declare* maps the task's parameters to its
    :class:`StageOutput`; the parameter ``store`` (a StoreRef or None) picks the key's kind."""

    declare: Callable[[dict[str, Any]], StageOutput] | None = None

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        assert self.declare is not None, "StagePolicy needs declare="
        return output_key(task_ctx, self.declare(inputs), open_ref(inputs.get("store")))

    def key(self, inputs: dict[str, Any]) -> str:
        """The key for *inputs* outside a task run (no result store: the no-store kind)."""
        return self.compute_key(None, inputs, {})  # type: ignore[arg-type]
