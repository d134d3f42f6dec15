"""The promotion gate: a paired comparison on the same images (McNemar's exact test, a paired
bootstrap interval, per-class recall), its three outcomes, and the record of the model in
service with its history and rollback, changed only through a conditional write."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from irv2_core.errors import Irv2Error
from irv2_core.lineage import ServiceRecord
from irv2_core.promotion import (
    GateRules,
    decide,
    promote,
    read_aliases,
    read_current,
    resolve,
    rollback,
    serve,
    set_alias,
)
from irv2_core.promotion.stats import Paired, mcnemar_exact, paired_bootstrap
from irv2_core.records import EvalRecord, PerImage
from irv2_core.runtime.arrays import pack_bools, pack_ints
from irv2_core.storage.store import LocalStore

RULES = GateRules()


def _eval(right: np.ndarray, labels: np.ndarray, split_key: str | None = "mr:val") -> EvalRecord:
    n = len(labels)
    per_image = PerImage(split_key=split_key, count=n, labels=pack_ints(labels),
                         top1=pack_bools(right), top5=pack_bools(np.ones(n)))  # fmt: skip
    return EvalRecord(top1=float(np.mean(right)), top5=1.0, loss=0.5, count=n, protocol="zoo",
                      checkpoint="c", image_size=75,
                      classes=[f"c{i}" for i in range(int(labels.max()) + 1)],
                      per_image=per_image)  # fmt: skip


def _pair(n: int, base_acc: float, flips_up: int, flips_down: int, classes: int = 10, seed=0):
    """Baseline right on ~base_acc of n images; the candidate fixes *flips_up* of its errors and
    breaks *flips_down* of its right answers."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    base = rng.random(n) < base_acc
    cand = base.copy()
    cand[rng.choice(np.flatnonzero(~base), flips_up, replace=False)] = True
    cand[rng.choice(np.flatnonzero(base), flips_down, replace=False)] = False
    return _eval(cand, labels), _eval(base, labels)


def _decide(pair: tuple[EvalRecord, EvalRecord], rules: GateRules = RULES):
    candidate, baseline = pair
    return decide(candidate, "new", baseline, "old", rules)


def _binom_two_sided(b: int, c: int) -> float:
    n, k = b + c, min(b, c)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


@pytest.mark.parametrize("b,c", [(0, 6), (3, 3), (10, 0), (7, 19), (40, 61), (0, 0)])
def test_mcnemar_exact_is_the_two_sided_binomial_tail(b, c):
    expected = 1.0 if b + c == 0 else _binom_two_sided(b, c)
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)
    assert mcnemar_exact(c, b) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_holds_for_an_imagenet_sized_split():
    assert 0 < mcnemar_exact(2400, 2600) < 0.01 < mcnemar_exact(2480, 2520) <= 1


def test_the_bootstrap_interval_is_reproducible_and_covers_the_difference():
    cand, base = _pair(2000, 0.8, 60, 20)
    from irv2_core.promotion.gate import _paired

    paired = _paired(cand, base)
    low, high = paired_bootstrap(paired, 1000)
    assert (low, high) == paired_bootstrap(paired, 1000)  # a fixed seed
    assert low < paired.delta_top1 < high and high - low < 0.03
    narrow = Paired(np.tile(paired.candidate, 4), np.tile(paired.baseline, 4),
                    np.tile(paired.labels, 4))  # fmt: skip
    n_low, n_high = paired_bootstrap(narrow, 1000)
    assert n_high - n_low < (high - low) * 0.7  # four times the images: about half the width


def test_significantly_better_is_promoted():
    verdict = _decide(_pair(2000, 0.8, 60, 10), RULES)
    assert verdict.outcome == "promote" and "significantly better" in verdict.reason
    assert verdict.comparison.candidate_only == 60 and verdict.comparison.baseline_only == 10


def test_significantly_worse_is_rejected_and_a_small_drop_on_many_images_passes():
    worse = _decide(_pair(2000, 0.8, 10, 60), RULES)
    assert worse.outcome == "reject" and "significantly worse" in worse.reason
    # 0.1 point down on 20,000 images: the interval stays above -0.5 points
    near = _decide(_pair(20000, 0.8, 180, 200, seed=1), RULES)
    assert near.outcome == "promote" and "within 0.5 points" in near.reason


def test_too_few_images_to_tell_asks_a_person():
    verdict = _decide(_pair(200, 0.8, 3, 5), RULES)
    assert verdict.outcome == "ask" and "inconclusive" in verdict.reason


def test_a_broken_class_is_rejected_even_when_top1_improves():
    n, rng = 4000, np.random.default_rng(3)
    labels = rng.integers(0, 10, n)
    base = rng.random(n) < 0.8
    cand = base | (rng.random(n) < 0.5)  # much better overall...
    cand[labels == 7] = False  # ...but class 7 is gone
    verdict = decide(_eval(cand, labels), "new", _eval(base, labels), "old", RULES)
    assert verdict.outcome == "reject" and "class 'c7' broken" in verdict.reason
    assert verdict.comparison.broken_classes[0].name == "c7"


def test_approval_always_asks_but_never_for_a_reject():
    always = RULES.model_copy(update={"approval": "always"})
    assert _decide(_pair(2000, 0.8, 60, 10), always).outcome == "ask"
    assert _decide(_pair(2000, 0.8, 10, 60), always).outcome == "reject"


def test_no_model_the_same_model_and_other_images():
    cand, base = _pair(500, 0.8, 5, 5)
    assert decide(cand, "new", None, None, RULES).outcome == "promote"
    assert decide(cand, "new", None, "new", RULES).outcome == "promote"
    other = base.model_copy(update={"per_image": base.per_image.model_copy(
        update={"split_key": "another:val"})})  # fmt: skip
    assert decide(cand, "new", other, "old", RULES).outcome == "ask"  # never across splits


def test_out_of_range_rules_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        GateRules(alpha=0.9)
    with pytest.raises(ValueError, match="min_class_support"):
        GateRules(min_class_support=0)


def _in_service(run_id: str, top1: float = 0.9) -> ServiceRecord:
    right = np.arange(100) < top1 * 100
    return ServiceRecord(run_id=run_id, run_uri=f"u/{run_id}",
                         eval=_eval(right, np.arange(100) % 4))  # fmt: skip


def test_promotion_is_a_conditional_write_that_keeps_the_history(tmp_path):
    store = LocalStore(tmp_path)
    assert read_current(store, "nightly") == (None, None)
    assert promote(store, "nightly", _in_service("run-1"), None) is not None
    record, version = read_current(store, "nightly")
    assert record.run_id == "run-1" and record.history == []
    assert promote(store, "nightly", _in_service("run-2"), None) is None  # it exists now
    assert promote(store, "nightly", _in_service("run-3"), version) is not None
    stale = promote(store, "nightly", _in_service("run-4"), version)  # another run won
    current = read_current(store, "nightly")[0]
    assert stale is None and current.run_id == "run-3"
    assert [e.run_id for e in current.history] == ["run-1"]
    assert current.history[0].eval.per_image is None  # only the model in service keeps them


def test_rollback_puts_an_earlier_model_back(tmp_path):
    store = LocalStore(tmp_path)
    with pytest.raises(Irv2Error, match="no earlier model"):
        rollback(store, "d")
    version = None
    for run in ("run-1", "run-2", "run-3"):
        promote(store, "d", _in_service(run), version)
        version = read_current(store, "d")[1]
    back = rollback(store, "d", by="ana")
    assert back.run_id == "run-2" and back.decision == "rollback" and back.decided_by == "ana"
    assert [e.run_id for e in back.history] == ["run-3", "run-2", "run-1"]
    assert rollback(store, "d", "run-1").run_id == "run-1"
    with pytest.raises(Irv2Error, match="run-9 is neither an alias nor a run"):
        rollback(store, "d", "run-9")


def test_the_promote_task_leaves_current_json_alone_when_not_promoted(tmp_path):
    """The task writes ``current.json`` only for a promoted candidate: a rejected one leaves the
    record byte for byte as it was, and an approved one replaces it."""
    from prefect.logging import disable_run_logger

    from tasks.promotion import promote_task

    store, models = LocalStore(tmp_path), {"uri": str(tmp_path)}
    promote(store, "default", _in_service("run-old"), None)  # outside a deployment: "default"
    path = tmp_path / "models" / "default" / "current.json"
    before, version = path.read_bytes(), read_current(store, "default")[1]
    with disable_run_logger():
        worse = promote_task.fn(models, _in_service("run-new"), version, "reject", "worse")
        assert not worse["promoted"] and path.read_bytes() == before
        challenger = resolve(store, "default", "challenger")
        assert (challenger.run_id, challenger.decision, challenger.reason) == (
            "run-new", "reject", "worse")  # fmt: skip
        ok = promote_task.fn(models, _in_service("run-best"), version, "approve", "looks good")
        assert resolve(store, "default", "challenger") is None  # the newest is in service
        again = promote_task.fn(models, _in_service("run-other"), version, "approve", "late")
    assert ok["promoted"] and read_current(store, "default")[0].run_id == "run-best"
    assert not again["promoted"] and "changed during this run" in again["reason"]
    assert resolve(store, "default", "challenger").run_id == "run-other"


def test_the_models_command_lists_shows_and_rolls_back(tmp_path, capsys):
    from irv2_core.cli import main

    store = LocalStore(tmp_path)
    promote(store, "nightly", _in_service("run-1"), None)
    promote(store, "nightly", _in_service("run-2"), read_current(store, "nightly")[1])
    assert main(["models", "--store", str(tmp_path), "list"]) == 0
    assert "nightly\trun-2\ttop-1 0.9000\tpromote by rule" in capsys.readouterr().out
    assert main(["models", "--store", str(tmp_path), "rollback", "nightly", "--by", "ana"]) == 0
    assert "run-1 is in service again" in capsys.readouterr().out
    assert main(["models", "--store", str(tmp_path), "show", "nightly"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["run_id"], shown["decided_by"], shown["decision"]) == ("run-1", "ana", "rollback")
    assert "per_image" not in shown["eval"]
    assert main(["models", "--store", str(tmp_path), "show", "nope"]) == 2
    models = ["models", "--store", str(tmp_path)]
    assert main([*models, "alias", "nightly", "canary", "run-2"]) == 0
    assert main([*models, "alias", "nightly"]) == 0
    listed = capsys.readouterr().out
    assert "champion\trun-1\trollback by ana" in listed and "canary\trun-2" in listed
    assert main([*models, "show", "nightly", "--alias", "canary"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == "run-2"
    assert main([*models, "serve", "nightly", "canary", "--by", "bo"]) == 0
    assert "run-2 is in service" in capsys.readouterr().out
    assert main([*models, "alias", "nightly", "canary", "--delete"]) == 0
    assert main([*models, "alias", "nightly", "champion", "run-1"]) == 2  # reserved


def test_the_rollback_flow_puts_the_previous_model_back(tmp_path, prefect_harness):
    from flows.rollback import rollback_model

    store = LocalStore(tmp_path)
    promote(store, "nightly", _in_service("run-1"), None)
    promote(store, "nightly", _in_service("run-2"), read_current(store, "nightly")[1])
    result = rollback_model(deployment="nightly", workdir=str(tmp_path), by="on call")
    assert (result["run_id"], result["decided_by"]) == ("run-1", "on call")
    assert read_current(store, "nightly")[0].run_id == "run-1"
    with pytest.raises(Irv2Error, match="run-9 is neither an alias nor a run"):
        rollback_model(deployment="nightly", to_run="run-9", workdir=str(tmp_path))


def test_aliases_name_models_and_champion_is_the_one_in_service(tmp_path):
    store = LocalStore(tmp_path)
    promote(store, "d", _in_service("run-1"), None)
    promote(store, "d", _in_service("run-2"), read_current(store, "d")[1])
    assert resolve(store, "d", "champion").run_id == "run-2"
    assert resolve(store, "d", "run-1").run_id == "run-1"  # a run that was in service
    assert resolve(store, "d", "canary") is None
    assert set_alias(store, "d", "canary", resolve(store, "d", "run-1")) is None
    assert resolve(store, "d", "canary").run_id == "run-1"
    assert resolve(store, "d", "canary").eval.per_image is None  # only the gate's baseline
    assert set_alias(store, "d", "canary", None).run_id == "run-1"
    assert set_alias(store, "d", "canary", None) is None
    assert read_aliases(store, "d")[0].aliases == {}
    with pytest.raises(Irv2Error, match="always names the model in service"):
        set_alias(store, "d", "champion", resolve(store, "d", "run-1"))
    with pytest.raises(Irv2Error, match="lower-case letters"):
        set_alias(store, "d", "Bad Name", None)


def test_concurrent_alias_changes_are_all_kept(tmp_path):
    """Eight writers set eight aliases at once, ten times over: every one is kept (each change
    is a conditional write of aliases.json, retried when another came first)."""
    from concurrent.futures import ThreadPoolExecutor

    store = LocalStore(tmp_path)
    promote(store, "d", _in_service("run-1"), None)
    entry = resolve(store, "d", "champion")
    for trial in range(10):
        names = [f"t{trial}-a{i}" for i in range(8)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: set_alias(store, "d", n, entry), names))
        assert set(names) <= set(read_aliases(store, "d")[0].aliases), trial


def test_serve_puts_the_challenger_in_service_and_rollback_an_earlier_model(tmp_path):
    store = LocalStore(tmp_path)
    for run in ("run-1", "run-2"):
        promote(store, "d", _in_service(run), read_current(store, "d")[1])
    set_alias(store, "d", "challenger", _in_service("run-3"))
    served = serve(store, "d", "challenger", by="ana")
    assert (served.run_id, served.decision, served.decided_by) == ("run-3", "manual", "ana")
    assert "challenger put in service by hand, replacing run-2" in served.reason
    assert [e.run_id for e in served.history] == ["run-2", "run-1"]
    with pytest.raises(Irv2Error, match="is already in service"):
        serve(store, "d", "champion")
    back = rollback(store, "d", "run-1")
    assert (back.run_id, back.decision) == ("run-1", "rollback")
    with pytest.raises(Irv2Error, match=r"known: champion, challenger, run-3, run-2, run-1"):
        serve(store, "d", "nightly-7")


def test_the_checkpoint_of_a_record_from_an_older_release_is_found_through_its_run(tmp_path):
    """current.json written before records named their checkpoint: the run's final.ckpt (a run
    folder without a store) is what gets re-evaluated; a run that is gone gives None."""
    from irv2_core.promotion.service import checkpoint_of
    from irv2_core.runtime.io import sha256_file

    store = LocalStore(tmp_path / "store")
    run_dir = tmp_path / "runs" / "run-old"
    run_dir.mkdir(parents=True)
    (run_dir / "final.ckpt").write_bytes(b"weights")
    old = ServiceRecord(run_id="run-old", run_uri=str(run_dir), eval=_in_service("x").eval)
    found = checkpoint_of(store, old)
    ckpt = run_dir / "final.ckpt"
    assert (found.key, found.sha256) == (str(ckpt), sha256_file(ckpt))
    gone = old.model_copy(update={"run_uri": str(tmp_path / "runs" / "deleted")})
    assert checkpoint_of(store, gone) is None
