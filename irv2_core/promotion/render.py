"""The gate's verdict as Markdown: the approval form's description in the Prefect UI, and the
promotion section of the report."""

from __future__ import annotations

from irv2_core.promotion.gate import Verdict

__all__ = ["verdict_markdown"]


def verdict_markdown(verdict: Verdict, run_id: str) -> str:
    """Markdown of the verdict on *run_id*: the outcome and, when there was a comparison, its
    numbers and the classes that lost most."""
    lines = [f"**Promotion of `{run_id}`: {verdict.outcome}** — {verdict.reason}", ""]
    cmp = verdict.comparison
    if cmp is None:
        return "\n".join(lines)
    low, high = cmp.interval_points
    lines += [
        "| | |",
        "|---|---|",
        f"| Δtop-1 (candidate − in service) | {cmp.delta_top1_points:+.2f} points |",
        f"| interval | {low:+.2f} to {high:+.2f} points |",
        f"| McNemar exact p | {cmp.p_value:.3g} |",
        f"| only the candidate right / only the model in service right | "
        f"{cmp.candidate_only} / {cmp.baseline_only} of {cmp.images} images |",
        "",
    ]
    if cmp.largest_drops:
        lines += ["| class | images | recall in service | recall candidate |", "|---|---|---|---|"]
        lines += [
            f"| {c.name} | {c.support} | {c.baseline_recall:.1%} | {c.candidate_recall:.1%} |"
            for c in cmp.largest_drops
        ]
    return "\n".join(lines)
