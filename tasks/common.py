"""Settings shared by every stage task: JSON-persisted results and retry conditions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from irv2_core.errors import EXIT_BAD_INPUT, Irv2Error, TransientError
from irv2_core.records import schema_digest
from irv2_core.storage.s3client import is_transient

__all__ = [
    "PERSIST",
    "exception_of",
    "for_record",
    "is_transient_network_error",
    "is_user_error",
    "retry_transient_only",
    "retry_unless_user_error",
]

# Results are stage records (irv2_core.records) dumped as plain JSON dicts; never pickle them.
PERSIST: dict[str, Any] = {"persist_result": True, "result_serializer": "json"}


def for_record(key: str, record: type[BaseModel]) -> str:
    """The cache *key* tagged with the schema digest of the *record* type the task returns.

    A stored result is then handed back only while the record has the same shape, so the flow's
    ``model_validate`` never meets a result written by older code. The tag is a suffix: the
    stamped output still matches its content digest (``tasks.caching.stamped_key``), so a new
    record shape re-reads intact outputs instead of redoing the work.
    """
    return f"{key.split('~')[0]}~{schema_digest(record)}"


def exception_of(state: Any) -> BaseException | None:
    """The exception a failed Prefect state holds (None if it holds none)."""
    try:
        value = state.result(raise_on_failure=False)
    except Exception as exc:  # a result that cannot be loaded is itself the failure
        return exc
    return value if isinstance(value, BaseException) else None


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        # `raise ... from None` hides the context on purpose: so do we
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return seen


def is_transient_network_error(exc: BaseException | None) -> bool:
    """True for errors worth retrying: connection drops, timeouts, S3 throttling and 5xx.

    Authentication failures and missing buckets/keys are not transient: retrying cannot fix them.
    """
    return any(is_transient(err) for err in _chain(exc))


def is_user_error(exc: BaseException | None) -> bool:
    """True when the failure is bad input (an Irv2Error that is not a TransientError, or the
    CLI's exit status EXIT_BAD_INPUT): do not retry. EXIT_TRANSIENT is retried."""
    for err in _chain(exc):
        if isinstance(err, Irv2Error) and not isinstance(err, TransientError):
            return True
        if getattr(err, "returncode", None) == EXIT_BAD_INPUT:
            return True
    return False


def retry_transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only transient network failures."""
    return is_transient_network_error(exception_of(state))


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry crashes and kills, not bad input."""
    return not is_user_error(exception_of(state))
