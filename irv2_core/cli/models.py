"""``irv2 models list|show|rollback``: the model in service of each deployment, its history, and
putting an earlier one back (the same conditional write a promotion makes)."""

from __future__ import annotations

import argparse
import json
import time


def _store(args: argparse.Namespace):
    from irv2_core.storage import open_store

    return open_store(args.store, args.endpoint_url)


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + " UTC" if at else "-"


def _run_list(args: argparse.Namespace) -> int:
    from irv2_core.promotion import read_current

    store = _store(args)
    names = sorted({o.key.split("/")[1] for o in store.list("models/")
                    if o.key.endswith("/current.json")})  # fmt: skip
    if not names:
        print(f"no deployment has a model in service in {store.uri}")
    for name in names:
        record, _ = read_current(store, name)
        by = f"{record.decision} by {record.decided_by}"
        when, earlier = _when(record.promoted_at), len(record.history)
        top1 = f"top-1 {record.eval.top1:.4f}"
        print(f"{name}\t{record.run_id}\t{top1}\t{by}\t{when}\t{earlier} earlier")
    return 0


def _run_show(args: argparse.Namespace) -> int:
    from irv2_core.errors import Irv2Error
    from irv2_core.promotion import read_current

    record, _ = read_current(_store(args), args.deployment)
    if record is None:
        raise Irv2Error(f"{args.deployment}: no model in service in {args.store}")
    shown = record.model_dump(mode="json", exclude={"eval": {"per_image", "misclassified"}})
    print(json.dumps(shown, indent=2))
    return 0


def _run_rollback(args: argparse.Namespace) -> int:
    from irv2_core.promotion import rollback

    record = rollback(_store(args), args.deployment, args.to, by=args.by)
    print(f"{args.deployment}: {record.run_id} is in service again ({record.reason})")
    return 0


def add_models(subparsers) -> None:
    """Register ``irv2 models {list,show,rollback}``."""
    p = subparsers.add_parser(
        "models",
        help="the model in service per deployment: list, show, rollback",
        description="Read or change models/<deployment>/current.json in the flow's output_uri "
        "(or its workdir, without one). Rollback puts an earlier model back in service, only if "
        "nothing changed it meanwhile.",
    )
    p.add_argument("--store", required=True, help="the flow's output_uri (or its workdir)")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint (MinIO, OBS)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("list", help="each deployment's model in service").set_defaults(func=_run_list)
    show = verbs.add_parser("show", help="one deployment's record, with its history")
    show.add_argument("deployment")
    show.set_defaults(func=_run_show)
    back = verbs.add_parser("rollback", help="put an earlier model back in service")
    back.add_argument("deployment")
    back.add_argument("--to", metavar="RUN_ID", help="a run of the history (default: the last)")
    back.add_argument("--by", default="irv2 models rollback", help="who rolls back (recorded)")
    back.set_defaults(func=_run_rollback)
