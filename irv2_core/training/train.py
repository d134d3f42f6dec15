"""``irv2 train``: the zoo recipe in a plain Python loop over a GRAPH-mode train cell.

The run folder (see docs/contracts.md) receives the resolved config, resumable checkpoints
(network + optimizer state + global step), ``metrics.jsonl``, ``progress.json`` and, written
last, ``train_summary.json``. ``--resume`` continues from ``checkpoints/latest.json`` with the
same LR position and data order (each epoch's shuffle is seeded by ``seed + epoch`` and the
batches already consumed are skipped), and starts fresh when no checkpoint exists yet, so a
retried job can always pass it. Under msrun every rank trains its shard with averaged gradients.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import mindspore as ms
import mindspore.dataset as ds

from irv2_core.config import Config, save_config
from irv2_core.data.datasets import create_dataset, dataset_size, has_split, read_classes
from irv2_core.errors import Irv2Error
from irv2_core.evaluation import eval_batches, evaluate_network, with_weights_protocol
from irv2_core.models.factory import create_model
from irv2_core.models.weights import load_pretrained
from irv2_core.records import EvalMetrics, TrainSummary
from irv2_core.runtime.context import setup_context
from irv2_core.runtime.dirlock import folder_lock
from irv2_core.runtime.hold import hold_at
from irv2_core.runtime.io import atomic_write_json, sha256_file
from irv2_core.runtime.stack import software_stack
from irv2_core.storage import open_store
from irv2_core.storage.lease import StoreLease
from irv2_core.storage.mirror import Mirror
from irv2_core.training import checkpoints as ckpts
from irv2_core.training.compile_share import SharedCompileCache
from irv2_core.training.distributed import (
    DistInfo,
    env_world,
    init_distributed,
    is_scheduler,
    run_scheduler,
)
from irv2_core.training.preempt import Preempted, StopSignal
from irv2_core.training.recipe import (
    build_train_cell,
    check_amp_supported,
    create_optimizer,
    lr_schedule,
)
from irv2_core.training.runlog import RunLog, record_first_batch
from irv2_core.training.utilisation import start_sampler

__all__ = ["LEASE_KEY", "epoch_batches", "pretrained_protocol", "resolve_num_classes", "train"]

LEASE_KEY = "lease.json"  # under the run's prefix in the store


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


def pretrained_protocol(cfg: Config) -> Config:
    """Fine-tuning feeds the pretrained weights the protocol they record (an explicit
    ``eval_protocol`` that disagrees is refused); the run then records it in its own files."""
    if not cfg.pretrained or not Path(cfg.pretrained).is_file():
        return cfg  # load_pretrained names a missing file
    return with_weights_protocol(cfg, cfg.pretrained)


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


def epoch_batches(cfg: Config, data_dir: Path, world: DistInfo, epoch: int, skip: int):
    """The training batches of epoch index *epoch* for this rank, from batch *skip* on: the
    same images in the same order in any process (a resume continues the stream exactly)."""
    ds.config.set_seed(cfg.seed + epoch)  # same order on a resumed run as on a straight one
    data = create_dataset(data_dir, "train", cfg, True, world.rank, world.size)
    if skip:
        data = data.skip(skip)
    return data.create_tuple_iterator(num_epochs=1)


def _evaluate(cfg: Config, net, data_dir: Path) -> EvalMetrics | None:
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
    mirror_uri: str | None = None,
    endpoint_url: str | None = None,
    lock_wait_s: float = 0.0,
    accept_stack_change: bool = False,
    compile_cache_uri: str | None = None,
) -> TrainSummary | None:
    """Train on *data_dir* (train split; val for evals) into *run_dir*; return the summary.

    *resume* continues from the run folder's latest checkpoint (weights, optimizer moments,
    global step) and is safe when there is none. *stop_after_steps* stops cleanly after that
    global step with a resumable checkpoint and no ``train_summary.json`` (the run is incomplete;
    the summary says ``stopped``). None in msrun's scheduler process, which does not train.

    *mirror_uri* (``s3://bucket/prefix/runs/<id>`` or a folder; *endpoint_url* for S3) is this
    run's place in the object store: checkpoints are copied there as they are written, a resume
    with no local checkpoint starts from the newest complete one there, and a lease there keeps
    a second worker out. Locally a lock on the run folder does the same; both wait up to
    *lock_wait_s* seconds for a live holder, then fail naming it.

    Every checkpoint records the software stack (``runtime.stack``); a resume from one written
    on another stack fails, naming what differs, unless *accept_stack_change*. SIGTERM stops
    training after the step in flight with a checkpoint of it (``training.preempt``).
    With *compile_cache_uri* (the ``output_uri``), the scoped compile cache is fetched from there
    before the first compile and published after the first step (``training.compile_share``).
    """
    if is_scheduler():  # msrun runs our command line as its scheduler too: it must not train
        run_scheduler()
        return None
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    store = open_store(mirror_uri, endpoint_url) if mirror_uri else None
    with contextlib.ExitStack() as guard:
        lease = None
        if env_world().is_master:  # one writer per run: rank 0 holds the locks for the job
            guard.enter_context(folder_lock(run_dir, "training", lock_wait_s))
            if store is not None:
                lease = StoreLease(store, LEASE_KEY, what="training run").acquire(lock_wait_s)
                guard.callback(lease.release)
        cache_store = open_store(compile_cache_uri, endpoint_url) if compile_cache_uri else None
        run = _Run(cfg, data_dir, run_dir, (resume, accept_stack_change), store, lease,
                   cache_store)  # fmt: skip
        guard.callback(run.checkpoints.close)  # every checkpoint written reaches the store
        guard.callback(run.stop.install().uninstall)
        if run.world.is_master:  # device utilisation beside img/s in the report
            sampler = start_sampler(cfg.device_target, lambda: run.step, run.log.row, run.log.line)
            if sampler is not None:
                guard.callback(sampler.stopped.set)
        summary = run.train(stop_after_steps)
        run.checkpoints.close()
        if lease is not None:  # ...and came from the run's one writer (LeaseLost otherwise)
            lease.confirm()
        return summary


class _Run:
    """One training process: the recipe's parts built from the config, then the loop."""

    def __init__(
        self, cfg: Config, data_dir: Path, run_dir: Path, resume: tuple[bool, bool], store,
        lease=None, cache_store=None,
    ) -> None:  # fmt: skip
        self.started = time.perf_counter()
        self.lease: StoreLease | None = lease  # fencing: a lost lease stops every write
        self.data_dir, self.run_dir = data_dir, run_dir
        cfg = pretrained_protocol(resolve_num_classes(cfg, read_classes(data_dir)))
        check_amp_supported(cfg)
        self.spe = _steps_per_epoch(cfg, data_dir, env_world())
        eval_size = dataset_size(data_dir, "val") if has_split(data_dir, "val") else 0
        scope = f"train|{self.spe}|{eval_size}|{env_world().size}"
        cache = setup_context(cfg, cache_scope=scope)
        self.cfg, self.world = cfg, init_distributed()
        self.log = RunLog(run_dir, enabled=self.world.is_master)
        self.compile_cache = SharedCompileCache(cache_store, cache, self.world.rank, self.log.line)
        self.compile_cache.fetch()  # before the first step compiles
        resume, accept_stack = resume
        _prepare_run_dir(cfg, run_dir, data_dir, resume, self.world)
        self.epochs = cfg.epoch_size - cfg.start_epoch + 1
        self.total = self.spe * self.epochs
        self.lr = lr_schedule(cfg, self.spe)
        self.net, _, self.cell = _build(cfg, self.lr)
        fence = lease.confirm if lease is not None else None  # checked before every upload
        mirror = Mirror(store, "", self.log.line, fence) if store is not None else None
        self.stack = software_stack(cfg.device_target)
        self.checkpoints = ckpts.CheckpointStore(run_dir, cfg, self.world, mirror, self.stack)
        self.checkpoints.accept_stack = accept_stack
        self.step = self._restore(store) if resume else 0
        self.resumed_from = self.step
        self.stop = StopSignal(self.world)  # SIGTERM: a checkpoint of the step, then exit
        self.speeds: list[float] = []
        self.last_loss: float | None = None
        self.last_eval: EvalMetrics | None = None

    def _restore(self, store) -> int:
        if store is not None and (pulled := self.checkpoints.pull(store, "")):
            self.log.line(f"resume: fetched {pulled.name} from {store.uri} (verified)")
        if self.checkpoints.newest_step is not None:  # every rank: the store's newest, no newer
            newest = self.checkpoints.newest_step
            self.log.line(f"resume: the store's newest complete checkpoint is at step {newest}")
        step = self.checkpoints.restore(self.cell)
        for path, reason in self.checkpoints.skipped:
            self.log.line(f"resume: skipped {path.name}: {reason}")
        for change in self.checkpoints.stack_changes:  # accepted by the run (else it raised)
            self.log.line(f"resume: software stack changed, accepted: {change}")
        if step == 0:
            self.log.line("resume: no checkpoint in the run folder yet, starting from step 0")
        else:
            where = self.checkpoints.restored_from
            self.log.line(f"resume: restored step {step}/{self.total} from {where}")
            self.log.trim_after(step)
        return step

    def train(self, stop_after_steps: int | None) -> TrainSummary:
        """Run the remaining epochs; checkpoint, evaluate and summarise as the config says."""
        cfg = self.cfg
        for epoch in range(self.step // self.spe, self.epochs):
            batches = epoch_batches(cfg, self.data_dir, self.world, epoch, self.step % self.spe)
            self._run_epoch(batches, epoch, stop_after_steps)
            del batches
            stopped = stop_after_steps is not None and self.total > self.step >= stop_after_steps
            epoch_done = self.step == (epoch + 1) * self.spe
            last = epoch + 1 == self.epochs
            if stopped or (epoch_done and ((epoch + 1) % cfg.save_checkpoint_epochs == 0 or last)):
                self._fence()
                self.checkpoints.save(self.cell, cfg.start_epoch + epoch, self.step)
            if stopped or epoch_done:
                self._hold()
            if stopped:
                return self._summary()
            if epoch_done and self.world.is_master and _eval_due(cfg, epoch, self.epochs):
                self.last_eval = _evaluate(cfg, self.net, self.data_dir)
                if self.last_eval is not None:
                    self.log.eval(self.step, cfg.start_epoch + epoch, self.last_eval)
        self._fence(fresh=True)  # never a final checkpoint or summary from a fenced-off writer
        self.compile_cache.publish()  # with the evaluation graph, if one was compiled
        final = self.checkpoints.save_final(self.net)
        summary = self._summary().model_copy(
            update={
                "final_checkpoint": str(final) if final else None,
                "final_sha256": sha256_file(final) if final else None,
                "eval": self.last_eval,
            }
        )
        if self.world.is_master:
            atomic_write_json(self.run_dir / "train_summary.json", summary.file_content())
        self.log.line(f"done: {self.step}/{self.total} steps, final checkpoint {final}")
        return summary

    def _run_epoch(self, batches, epoch: int, stop_at: int | None) -> None:
        """Train on *batches* up to the epoch's end (or *stop_at*), keeping recovery
        checkpoints when they are due."""
        cfg, end = self.cfg, (epoch + 1) * self.spe
        global_batch = cfg.batch_size * self.world.size
        first = True
        for images, labels in batches:
            if self.step >= end:
                break
            self._fence()
            if first:  # one small row per rank and epoch: which data this rank trains on
                where = (self.world.rank, self.world.size, cfg.start_epoch + epoch, self.step + 1)
                record_first_batch(self.run_dir, *where, images, labels)
                first = False
            t0 = time.perf_counter()
            loss = float(self.cell(images, labels).asnumpy())  # asnumpy waits for the step
            dt = time.perf_counter() - t0
            self.step += 1
            self.last_loss = loss
            self.speeds.append(global_batch / dt)
            force = self.step == end or cfg.log_every_steps == 1
            self.log.train_step(self.step, self.total, cfg.start_epoch + epoch, loss,
                                float(self.lr[self.step - 1]), dt, global_batch / dt,
                                every=cfg.log_every_steps, force=force)  # fmt: skip
            if self.step == self.resumed_from + 1:
                self._first_step_done()
            if stop_at is not None and self.step >= stop_at:
                break
            if self.step < end and self.checkpoints.recovery_due(self.step):
                self._fence()
                self.checkpoints.save(self.cell, cfg.start_epoch + epoch, self.step, recovery=True)
            if self.step < end:
                self._hold()
            if self.stop.agreed():
                self._last_words(epoch)

    def _first_step_done(self) -> None:
        """Record how long the process took to its first step, and share the compile cache."""
        took = time.perf_counter() - self.started
        state = self.compile_cache.state
        self.log.line(f"first step after {took:.1f} s (compile cache: {state})")
        self.log.row({"kind": "first_step", "s": round(took, 3), "compile_cache": state,
                      "step": self.step, "time": time.time()})  # fmt: skip
        self.compile_cache.publish()

    def _last_words(self, epoch: int) -> None:
        """SIGTERM: this step's checkpoint (weights, optimizer, data position) saved and in the
        store, then Preempted. Every rank comes here after the same step."""
        began = time.monotonic()
        self.log.line(f"preempt: SIGTERM; saving step {self.step} before exiting")
        self._fence()
        self.checkpoints.save(self.cell, self.cfg.start_epoch + epoch, self.step, recovery=True)
        self.checkpoints.flush()
        saved_s = time.monotonic() - began
        self.log.line(f"preempt: step {self.step} saved and uploaded in {saved_s:.1f} s")
        self.log.preempted(self.step, saved_s)
        raise Preempted(self.step, saved_s)

    def _hold(self) -> None:
        """The test-only hold after this step (runtime/hold.py): rank 0, checkpoint in the store."""
        if self.world.is_master:
            hold_at(self.step, self.checkpoints.flush, self.log.line,
                    interrupted=lambda: self.stop.at is not None)  # fmt: skip

    def _fence(self, fresh: bool = False) -> None:
        """Raise LeaseLost (naming the new holder) once this worker is no longer the run's writer;
        *fresh* reads the lease from the store instead of trusting the last heartbeat."""
        if self.lease is None:
            return
        if fresh:
            self.lease.confirm()
        else:
            self.lease.check()

    def _summary(self) -> TrainSummary:
        steady = self.speeds[1:] or self.speeds  # a process's first step includes compilation
        return TrainSummary(
            global_step=self.step,
            total_steps=self.total,
            epochs=self.epochs,
            steps_per_epoch=self.spe,
            wall_s=round(time.perf_counter() - self.started, 3),
            img_per_s=round(sum(steady) / len(steady), 3) if steady else None,
            last_loss=self.last_loss,
            rank_size=self.world.size,
            resumed_from_step=self.resumed_from,
            stack=self.stack,
            run_dir=str(self.run_dir),
            stopped=self.step < self.total,
        )


def _eval_due(cfg: Config, epoch: int, epochs: int) -> bool:
    if epoch + 1 == epochs:
        return True
    return cfg.eval_every_epochs > 0 and (epoch + 1) % cfg.eval_every_epochs == 0
