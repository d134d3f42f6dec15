"""How often the promotion gate gets it right, by simulation: its power to catch a real top-1
drop, and its false alarms when nothing changed, against the old fixed rule ("reject when top-1
drops more than 0.2 points").

Each trial draws a validation split of N images and two models' per-image outcomes with a given
accuracy of the model in service, a rate of images the two models disagree on, and a true
Δtop-1 (candidate − in service). The gate (``irv2_core.promotion.gate``, default rules; per-class
checks off: one class) and the old rule judge the same draw. Prints, per N and true Δ, the share
of trials each outcome took. A "reject" for Δ = 0 is a false alarm; for Δ = -1 point, "reject"
is a catch and "promote" a miss ("ask" sends it to a person).

    python bench/promotion_power.py                     # N = 1,000 / 5,000 / 10,000 / 50,000
    python bench/promotion_power.py --sizes 1000 --trials 400 --disagree 0.04
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from irv2_core.promotion.gate import GateRules, decide  # noqa: E402
from irv2_core.records import EvalRecord, PerImage  # noqa: E402
from irv2_core.runtime.arrays import pack_bools, pack_ints  # noqa: E402

OLD_RULE_POINTS = 0.2


def _record(right: np.ndarray) -> EvalRecord:
    n = len(right)
    per_image = PerImage(split_key="sim:val", count=n, labels=pack_ints(np.zeros(n)),
                         top1=pack_bools(right), top5=pack_bools(np.ones(n)))  # fmt: skip
    return EvalRecord(top1=float(right.mean()), top5=1.0, loss=0.0, count=n, protocol="zoo",
                      checkpoint="-", image_size=299, classes=["all"],
                      per_image=per_image)  # fmt: skip


def _draw(rng, n: int, acc: float, disagree: float, delta: float):
    """In-service and candidate outcomes: of the images they disagree on (a share *disagree*),
    (disagree + delta) / 2 only the candidate gets right and (disagree - delta) / 2 only the model
    in service, so their top-1 differ by *delta* on average."""
    base = rng.random(n) < acc
    u = rng.random(n)
    lose = base & (u < (disagree - delta) / 2 / acc)  # right before, wrong now
    gain = ~base & (u < (disagree + delta) / 2 / (1 - acc))  # wrong before, right now
    return _record(base ^ lose ^ gain), _record(base)


def simulate(n: int, delta: float, trials: int, acc: float, disagree: float, rules: GateRules):
    rng = np.random.default_rng(n * 7 + int(delta * 1000))
    counts = {"promote": 0, "ask": 0, "reject": 0, "old reject": 0}
    for _ in range(trials):
        cand, base = _draw(rng, n, acc, disagree, delta)
        counts[decide(cand, "new", base, "old", rules).outcome] += 1
        counts["old reject"] += (cand.top1 - base.top1) * 100 < -OLD_RULE_POINTS
    return {k: v / trials for k, v in counts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000, 50000])
    ap.add_argument("--deltas", type=float, nargs="+", default=[0.0, -0.01])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--accuracy", type=float, default=0.8)
    ap.add_argument("--disagree", type=float, default=0.06, help="share of images they differ on")
    ap.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args()
    rules = GateRules(resamples=args.resamples)
    print(f"gate: {rules.model_dump()}; old rule: reject below -{OLD_RULE_POINTS} points")
    print(f"in-service top-1 {args.accuracy}, disagreement {args.disagree}, "
          f"{args.trials} trials per row\n")  # fmt: skip
    print("| images | true Δtop-1 | gate promote | gate ask | gate reject | old rule reject |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        for delta in args.deltas:
            r = simulate(n, delta, args.trials, args.accuracy, args.disagree, rules)
            print(f"| {n:,} | {delta * 100:+.1f} | {r['promote']:.0%} | {r['ask']:.0%} | "
                  f"{r['reject']:.0%} | {r['old reject']:.0%} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
