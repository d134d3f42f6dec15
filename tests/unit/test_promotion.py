"""The promotion gate: when a new model replaces the one in service, and that it never overwrites
a model it should not."""

from __future__ import annotations

from irv2_core.promotion import decide, promote, read_current
from irv2_core.records import EvalRecord
from irv2_core.storage.store import LocalStore


def _eval(top1: float) -> EvalRecord:
    return EvalRecord(
        top1=top1, top5=1.0, loss=0.5, count=400, protocol="zoo", checkpoint="c", image_size=75
    )


def _current(top1: float, run_id: str = "run-old") -> dict:
    return {"run_id": run_id, "eval": _eval(top1).to_json()}


def test_the_first_model_and_the_same_run_are_promoted():
    assert decide(_eval(0.5), "run-a", None, 0.2).promoted
    assert decide(_eval(0.5), "run-old", _current(0.9), 0.2).promoted  # already current


def test_a_drop_within_the_allowance_is_promoted_and_beyond_it_is_not():
    assert decide(_eval(0.9185), "run-new", _current(0.92), 0.2).promoted  # -0.15 points
    rejected = decide(_eval(0.9175), "run-new", _current(0.92), 0.2)  # -0.25 points
    assert not rejected.promoted
    assert "not promoted" in rejected.reason and "run-old stays current" in rejected.reason
    assert "-0.25 points" in rejected.reason


def test_promotion_is_a_conditional_write(tmp_path):
    store = LocalStore(tmp_path)
    assert read_current(store, "nightly") == (None, None)
    assert promote(store, "nightly", _current(0.9, "run-1"), None) is not None
    record, version = read_current(store, "nightly")
    assert record["run_id"] == "run-1"
    assert promote(store, "nightly", _current(0.8, "run-2"), None) is None  # it exists now
    assert promote(store, "nightly", _current(0.95, "run-3"), version) is not None
    stale = promote(store, "nightly", _current(0.99, "run-4"), version)  # another run won
    assert stale is None and read_current(store, "nightly")[0]["run_id"] == "run-3"


def test_the_promote_task_leaves_current_json_alone_when_the_gate_rejects(tmp_path):
    """The task writes ``current.json`` only for a promoted candidate: a rejected one leaves the
    record byte for byte as it was, and a better one replaces it."""
    from prefect.logging import disable_run_logger

    from tasks.promotion import promote_task

    store, models = LocalStore(tmp_path), {"uri": str(tmp_path)}
    promote(store, "default", _current(0.92, "run-old"), None)  # outside a deployment: "default"
    before = (tmp_path / "models" / "default" / "current.json").read_bytes()
    with disable_run_logger():
        worse = promote_task.fn(models, "run-new", _eval(0.9175).to_json(), "u", 0.2)
        assert not worse["promoted"] and "run-old stays current" in worse["reason"]
        assert (tmp_path / "models" / "default" / "current.json").read_bytes() == before
        better = promote_task.fn(models, "run-best", _eval(0.95).to_json(), "u", 0.2)
    assert better["promoted"] and read_current(store, "default")[0]["run_id"] == "run-best"
