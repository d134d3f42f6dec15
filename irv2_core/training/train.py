"""``irv2 train``: the zoo recipe in a plain Python loop over a GRAPH-mode train cell.

The run folder (see docs/contracts.md) receives the resolved config, resumable checkpoints
(network + optimizer state + global step), ``metrics.jsonl``, ``progress.json`` and, written
last, ``train_summary.json``. ``--resume`` continues from ``checkpoints/latest.json`` with the
same LR position and data order (each epoch's shuffle is seeded by ``seed + epoch`` and the
batches already consumed are skipped), and starts fresh when no checkpoint exists yet, so a
retried job can always pass it. Under msrun every rank trains its shard with averaged gradients.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mindspore as ms
import mindspore.dataset as ds

from irv2_core.config import Config, save_config
from irv2_core.data.datasets import create_dataset, dataset_size, has_split, read_classes
from irv2_core.errors import Irv2Error
from irv2_core.evaluation import eval_batches, evaluate_network
from irv2_core.models.factory import create_model
from irv2_core.models.weights import load_pretrained
from irv2_core.runtime.context import setup_context
from irv2_core.runtime.io import atomic_write_json
from irv2_core.training import checkpoints as ckpts
from irv2_core.training.distributed import (
    DistInfo,
    env_world,
    init_distributed,
    is_scheduler,
    run_scheduler,
)
from irv2_core.training.recipe import (
    build_train_cell,
    check_amp_supported,
    create_optimizer,
    lr_schedule,
)
from irv2_core.training.runlog import RunLog

__all__ = ["resolve_num_classes", "train"]


def resolve_num_classes(cfg: Config, classes: dict[str, int]) -> Config:
    """Fill ``num_classes`` from classes.json, or fail if an explicit value disagrees with it."""
    if cfg.num_classes is None:
        return cfg.model_copy(update={"num_classes": len(classes)})
    if cfg.num_classes != len(classes):
        raise Irv2Error(
            f"num_classes is {cfg.num_classes} in the config but classes.json lists "
            f"{len(classes)} classes; set num_classes to {len(classes)} or null (= from the data)"
        )
    return cfg


def _steps_per_epoch(cfg: Config, data_dir: Path, world: DistInfo) -> int:
    images = dataset_size(data_dir, "train", world.rank, world.size)
    steps = images // cfg.batch_size
    if steps == 0:
        raise Irv2Error(
            f"the train split of {data_dir} gives {images} images to this worker, fewer than "
            f"batch_size {cfg.batch_size}; lower batch_size (--set batch_size=N) or add images"
        )
    return min(steps, cfg.max_steps_per_epoch or steps)


def _build(cfg: Config, lr):
    ms.set_seed(cfg.seed)  # identical initial weights on every rank
    net = create_model(
        cfg.model,
        num_classes=cfg.num_classes,
        residual_bias=cfg.residual_bias,
        drop_rate=cfg.drop_rate,
        input_protocol=cfg.eval_protocol,  # uint8 batches in, normalised as the first op
    )
    if cfg.pretrained:
        load_pretrained(net, cfg.pretrained)
    opt = create_optimizer(cfg, net, lr)
    return net, opt, build_train_cell(cfg, net, opt)


def _prepare_run_dir(cfg: Config, run_dir: Path, data_dir: Path, resume: bool, world) -> None:
    if not resume and (run_dir / ckpts.LATEST).is_file():
        raise Irv2Error(
            f"{run_dir} already holds a training run ({run_dir / ckpts.LATEST}); pass --resume "
            "to continue it or choose a new --out folder"
        )
    if world.is_master:
        save_config(cfg, run_dir)
        atomic_write_json(run_dir / "classes.json", read_classes(data_dir))


def _epoch_batches(cfg: Config, data_dir: Path, world: DistInfo, epoch: int, skip: int):
    ds.config.set_seed(cfg.seed + epoch)  # same order on a resumed run as on a straight one
    data = create_dataset(data_dir, "train", cfg, True, world.rank, world.size)
    if skip:
        data = data.skip(skip)
    return data.create_tuple_iterator(num_epochs=1)


def _evaluate(cfg: Config, net, data_dir: Path) -> dict[str, Any] | None:
    if not has_split(data_dir, "val"):
        return None
    batches, batch_size = eval_batches(data_dir, "val", cfg)
    return evaluate_network(net, batches, batch_size)


def train(
    cfg: Config,
    data_dir: str | Path,
    run_dir: str | Path,
    resume: bool = False,
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """Train on *data_dir* (train split; val for evals) into *run_dir*; return the summary.

    *resume* continues from the run folder's latest checkpoint (weights, optimizer moments,
    global step) and is safe when there is none. *stop_after_steps* stops cleanly after that
    global step with a resumable checkpoint and no ``train_summary.json`` (the run is incomplete).
    """
    if is_scheduler():  # msrun runs our command line as its scheduler too: it must not train
        run_scheduler()
        return {"role": "scheduler"}
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    started = time.perf_counter()
    cfg = resolve_num_classes(cfg, read_classes(data_dir))
    check_amp_supported(cfg)
    spe = _steps_per_epoch(cfg, data_dir, env_world())
    eval_size = dataset_size(data_dir, "val") if has_split(data_dir, "val") else 0
    setup_context(cfg, cache_scope=f"train|{spe}|{eval_size}")
    world = init_distributed()
    log = RunLog(run_dir, enabled=world.is_master)
    _prepare_run_dir(cfg, run_dir, data_dir, resume, world)

    epochs = cfg.epoch_size - cfg.start_epoch + 1
    total = spe * epochs
    lr = lr_schedule(cfg, spe)
    net, opt, cell = _build(cfg, lr)
    store = ckpts.CheckpointStore(run_dir, cfg, world)
    step = store.restore(cell) if resume else 0
    for path, reason in store.skipped if resume else []:
        log.line(f"resume: skipped {path.name}: {reason}")
    if resume and step == 0:
        log.line("resume: no checkpoint in the run folder yet, starting from step 0")
    elif resume:
        log.line(f"resume: restored step {step}/{total} from {store.restored_from}")
        log.trim_after(step)

    global_batch = cfg.batch_size * world.size
    last_loss, speeds, last_eval = None, [], None
    first_epoch = step // spe
    for epoch in range(first_epoch, epochs):
        batches = _epoch_batches(cfg, data_dir, world, epoch, step - epoch * spe)
        step, loss = _run_epoch(
            cfg, cell, lr, log, batches, step, (epoch + 1) * spe, total, epoch, global_batch,
            stop_after_steps, speeds,
        )  # fmt: skip
        last_loss = loss if loss is not None else last_loss
        del batches
        stopped = stop_after_steps is not None and step >= stop_after_steps and step < total
        epoch_done = step == (epoch + 1) * spe
        if stopped or (
            epoch_done and ((epoch + 1) % cfg.save_checkpoint_epochs == 0 or epoch + 1 == epochs)
        ):
            store.save(cell, cfg.start_epoch + epoch, step)
        if stopped:
            return _partial_summary(step, total, spe, epochs, started, speeds, last_loss, world)
        if epoch_done and world.is_master and _eval_due(cfg, epoch, epochs):
            last_eval = _evaluate(cfg, net, data_dir)
            if last_eval is not None:
                log.eval(step, cfg.start_epoch + epoch, last_eval)

    final = store.save_final(net)
    summary = _partial_summary(step, total, spe, epochs, started, speeds, last_loss, world)
    summary.update(final_checkpoint=str(final) if final else None, eval=last_eval)
    summary.pop("stopped")
    if world.is_master:
        atomic_write_json(run_dir / "train_summary.json", summary)
    log.line(f"done: {step}/{total} steps, final checkpoint {final}")
    return summary


def _run_epoch(
    cfg, cell, lr, log, batches, step, end, total, epoch, global_batch, stop_at, speeds
) -> tuple[int, float | None]:
    """Train on *batches* from global *step* up to *end* (or *stop_at*); return the new step
    and the last loss. Each step's img/s is appended to *speeds*."""
    loss = None
    for images, labels in batches:
        if step >= end:
            break
        t0 = time.perf_counter()
        loss = float(cell(images, labels).asnumpy())  # asnumpy waits for the step to finish
        dt = time.perf_counter() - t0
        step += 1
        speeds.append(global_batch / dt)
        force = step == end or cfg.log_every_steps == 1
        epoch_no = cfg.start_epoch + epoch
        lr_now = float(lr[step - 1])
        log.train_step(step, total, epoch_no, loss, lr_now, dt, global_batch / dt,
                       every=cfg.log_every_steps, force=force)  # fmt: skip
        if stop_at is not None and step >= stop_at:
            break
    return step, loss


def _eval_due(cfg: Config, epoch: int, epochs: int) -> bool:
    if epoch + 1 == epochs:
        return True
    return cfg.eval_every_epochs > 0 and (epoch + 1) % cfg.eval_every_epochs == 0


def _partial_summary(step, total, spe, epochs, started, speeds, last_loss, world) -> dict:
    steady = speeds[1:] or speeds  # the first step of a process includes graph compilation
    return {
        "global_step": step,
        "total_steps": total,
        "epochs": epochs,
        "steps_per_epoch": spe,
        "wall_s": round(time.perf_counter() - started, 3),
        "img_per_s": round(sum(steady) / len(steady), 3) if steady else None,
        "last_loss": last_loss,
        "rank_size": world.size,
        "stopped": step < total,
    }
