"""``irv2 models list|show|alias|serve|rollback``: the model in service of each deployment
(``champion``), its history and aliases, and putting a named or earlier model in service (the
same conditional write a promotion makes)."""

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
    from irv2_core.promotion import CHAMPION, read_current, resolve

    store = _store(args)
    if args.alias == CHAMPION:
        record = read_current(store, args.deployment)[0]
    else:
        record = resolve(store, args.deployment, args.alias)
    if record is None:
        raise Irv2Error(f"{args.deployment}: {args.alias} names no model in {args.store}")
    shown = record.model_dump(mode="json", exclude={"eval": {"per_image", "misclassified"}})
    print(json.dumps(shown, indent=2))
    return 0


def _run_alias(args: argparse.Namespace) -> int:
    from irv2_core.errors import Irv2Error
    from irv2_core.promotion import CHAMPION, read_aliases, read_current, resolve, set_alias

    store, name = _store(args), args.deployment
    if args.alias is None:
        current = read_current(store, name)[0]
        named = {CHAMPION: current} if current else {}
        for alias, entry in {**named, **read_aliases(store, name)[0].aliases}.items():
            print(f"{alias}\t{entry.run_id}\t{entry.decision} by {entry.decided_by}")
        return 0
    if args.delete:
        gone = set_alias(store, name, args.alias, None)
        print(f"{name}: {args.alias} removed" if gone else f"{name}: no alias {args.alias}")
        return 0
    if args.target is None:
        raise Irv2Error("give the run id or alias the alias should name, or --delete")
    entry = resolve(store, name, args.target)
    if entry is None:
        raise Irv2Error(f"{name}: {args.target} is neither an alias nor a run that was in service")
    set_alias(store, name, args.alias, entry)
    print(f"{name}: {args.alias} -> {entry.run_id}")
    return 0


def _run_rollback(args: argparse.Namespace) -> int:
    from irv2_core.promotion import rollback

    record = rollback(_store(args), args.deployment, args.to, by=args.by)
    print(f"{args.deployment}: {record.run_id} is in service again ({record.reason})")
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    from irv2_core.promotion import serve

    record = serve(_store(args), args.deployment, args.name, by=args.by)
    print(f"{args.deployment}: {record.run_id} is in service ({record.reason})")
    return 0


def add_models(subparsers) -> None:
    """Register ``irv2 models {list,show,alias,serve,rollback}``."""
    p = subparsers.add_parser(
        "models",
        help="the model in service per deployment: list, show, alias, serve, rollback",
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
    show.add_argument("--alias", default="champion", help="the model it names (default: champion)")
    show.set_defaults(func=_run_show)
    alias = verbs.add_parser(
        "alias", help="list a deployment's aliases, or set or remove one",
        description="champion is the model in service; the flow names its newest candidate not "
        "put in service challenger; set others (e.g. canary) to any run that was in service.",
    )  # fmt: skip
    alias.add_argument("deployment")
    alias.add_argument("alias", nargs="?", help="the alias to set or remove (none: list them)")
    alias.add_argument("target", nargs="?", help="the run id or alias it should name")
    alias.add_argument("--delete", action="store_true", help="remove the alias")
    alias.set_defaults(func=_run_alias)
    serve = verbs.add_parser("serve", help="put an alias's model (or an earlier run) in service")
    serve.add_argument("deployment")
    serve.add_argument("name", help="an alias (e.g. challenger) or a run of the history")
    serve.add_argument("--by", default="irv2 models serve", help="who decides (recorded)")
    serve.set_defaults(func=_run_serve)
    back = verbs.add_parser("rollback", help="put an earlier model back in service")
    back.add_argument("deployment")
    back.add_argument("--to", metavar="RUN_ID", help="a run of the history (default: the last)")
    back.add_argument("--by", default="irv2 models rollback", help="who rolls back (recorded)")
    back.set_defaults(func=_run_rollback)
