"""Pieces both training scripts share: the run settings, the Accelerator, the data position,
the non-finite-loss guard and the step loop (metric logging: infra/metrics_file.py). The recipes
themselves stay in the training scripts (and the tokenizer's update in tokenizer/update.py)."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.tracking import get_available_trackers
from accelerate.utils import DataLoaderConfiguration, LoggerType, ProjectConfiguration
from tqdm.auto import tqdm

from .checkpointing import push_folder, save_checkpoint
from .config import check_choice, check_positive
from .metrics_file import log_metrics
from .polite_stop import PoliteStop


@dataclass
class RunConfig:
    """Settings every training run has. batch_size is the global batch per optimizer step: it is
    split over processes and gradient accumulation, so 1 or N devices optimise the same thing.
    The defaults are the tokenizer recipe (BENCHMARKS.md): Adam 2e-3, batch 32, a 100-step linear
    warmup and clipping at norm 1 (without them the first steps move the encoder far from the
    codebook and most codes fall idle), then a cosine decay to zero."""

    output_dir: str = "outputs/run"
    max_steps: int = 1500
    batch_size: int = 32
    learning_rate: float = 2e-3
    lr_scheduler: str = "cosine"  # cosine (to zero at max_steps) | constant
    warmup_steps: int = 100
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 = no clipping
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | bf16 | fp16
    compile: bool = False  # torch.compile the model's forward (in place: checkpoints keep their keys)
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs on a GPU) | max-autotune
    time_limit_minutes: float = 0.0  # > 0: checkpoint and stop after this long (resume=latest goes on)
    seed: int = 0
    resume: str | None = None  # latest | path to a checkpoint folder
    start_over: bool = False  # output_dir holds an earlier run: move it to <output_dir>.previous-N, start afresh
    checkpoint_every: int = 500
    checkpoints_to_keep: int = 2
    log_every: int = 50
    validate_every: int = 500
    validation_batches: int = 0  # 0 = the whole validation split
    log_with: str = "auto"  # auto (tensorboard when installed) | none | all | any Accelerate trackers, comma-separated
    nonfinite_loss: str = "stop"  # stop | skip (the step)
    push_to_hub: bool = False
    hub_repo_id: str | None = None

    def __post_init__(self):
        check_choice("lr_scheduler", self.lr_scheduler, ("constant", "cosine"))
        check_choice("mixed_precision", self.mixed_precision, ("no", "bf16", "fp16"))
        check_choice("compile_mode", self.compile_mode, ("default", "reduce-overhead", "max-autotune"))
        check_trackers(self.log_with)
        check_choice("nonfinite_loss", self.nonfinite_loss, ("stop", "skip"))
        for name in ("max_steps", "batch_size", "learning_rate", "gradient_accumulation_steps",
                     "checkpoint_every", "checkpoints_to_keep", "log_every", "validate_every"):  # fmt: skip
            check_positive(name, getattr(self, name))
        for name in ("warmup_steps", "weight_decay", "max_grad_norm", "validation_batches", "time_limit_minutes"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if self.start_over and self.resume:
            raise ValueError(f"start_over=true starts afresh but resume={self.resume} continues a run; set one of them")
        if self.push_to_hub and not self.hub_repo_id:
            raise ValueError("push_to_hub=true needs hub_repo_id=USER/NAME")

    @property
    def scheduler_name(self) -> str:
        """The `transformers.get_scheduler` name of lr_scheduler."""
        return "cosine" if self.lr_scheduler == "cosine" else "constant_with_warmup"


def check_trackers(log_with: str) -> None:
    """log_with: auto, none, all, or Accelerate tracker names (comma-separated), each installed."""
    if log_with in ("auto", "none", "all"):
        return
    known = [member.value for member in LoggerType if member.value != "all"]
    installed = [str(getattr(tracker, "value", tracker)) for tracker in get_available_trackers()]
    for name in log_with.split(","):
        if name not in known:
            raise ValueError(
                f"log_with={log_with!r}: {name!r} is not an Accelerate tracker; use auto, none, all or any of {known}"
            )
        if name not in installed:
            raise ValueError(
                f"log_with={log_with!r}: the {name} tracker is not installed (pip install {name}); installed: "
                f"{installed or 'none'}. Or use log_with=none (metrics.jsonl is always written)"
            )


def build_accelerator(config: RunConfig) -> Accelerator:
    """Accelerator with a project folder, seeded data order and the chosen tracker."""
    log_with = config.log_with
    if log_with == "auto":
        log_with = "tensorboard" if importlib.util.find_spec("tensorboard") else "none"
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=None if log_with == "none" else log_with.split(","),
        project_config=ProjectConfiguration(project_dir=config.output_dir, logging_dir=f"{config.output_dir}/logs"),
        # non_blocking: the prepared loader copies each (pinned, see training_loader) batch to the
        # device without waiting for the kernels queued before it.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed, non_blocking=True),
    )
    per_step = accelerator.num_processes * config.gradient_accumulation_steps
    if config.batch_size % per_step:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by processes x accumulation = {per_step}")
    return accelerator


def compile_model(model: torch.nn.Module, config: RunConfig) -> torch.nn.Module:
    """`torch.compile` the model's forward in place when config.compile (before `prepare`).
    In place (`Module.compile`) rather than Accelerate's wrapper, whose `_orig_mod.` key prefix
    would tie every checkpoint to compiled runs; data-dependent code (the codebook's first-batch
    draw, a cold Sinkhorn start, POT) runs eagerly at graph breaks."""
    if config.compile:
        model.compile(mode=None if config.compile_mode == "default" else config.compile_mode)
    return model


def out_of_time(accelerator: Accelerator, config: RunConfig, started: float, step: int) -> bool:
    """True on every process alike once config.time_limit_minutes have passed since `started`
    (time.monotonic()). Looked at on log steps only, which read the device anyway."""
    if not config.time_limit_minutes or step % config.log_every:
        return False
    late = torch.tensor([float(time.monotonic() - started > 60 * config.time_limit_minutes)], device=accelerator.device)
    return accelerator.reduce(late, "sum").item() > 0


def checkpoint_if_due(accelerator: Accelerator, config: RunConfig, step: int, batches_seen: int, saved_config: dict,
                      started: float, stop) -> bool:  # fmt: skip
    """After an optimizer step: save a checkpoint on checkpoint steps, at max_steps, past
    time_limit_minutes, or when a signal asked the run to stop (`stop`: infra.polite_stop), which
    then marks the step in the metrics and exits with 128 + the signal's number. True when the
    time limit ends the run here (the caller returns `TrainingLoop.stop_at_time_limit()`)."""
    stop_early = out_of_time(accelerator, config, started, step) and step < config.max_steps
    signalled = stop.requested(step) and step < config.max_steps
    if step % config.checkpoint_every == 0 or step == config.max_steps or stop_early or signalled:
        state = {"batches_seen": batches_seen}
        checkpoint = save_checkpoint(accelerator, config.output_dir, step, state, saved_config, config.checkpoints_to_keep)
    if signalled:
        log_metrics(accelerator, config, step, {"stopped_by_signal": stop.received})
        stop.exit(step, checkpoint)
    return stop_early


def finish_run(accelerator: Accelerator, config: RunConfig, claim, saved: Path | None) -> None:
    """The end of a training script: push the `saved` folder to the Hub when config.push_to_hub
    (the main process saved it; the others pass None), end the trackers, release the run folder."""
    if saved is not None and config.push_to_hub:
        accelerator.print(f"pushed to {push_folder(saved, config.hub_repo_id)}")
    accelerator.end_training()
    claim.release()


def per_process_batch_size(accelerator: Accelerator, config: RunConfig) -> int:
    return config.batch_size // (accelerator.num_processes * config.gradient_accumulation_steps)


def training_loader(dataset, accelerator: Accelerator, config: RunConfig, **options) -> torch.utils.data.DataLoader:
    """Shuffled whole batches (a graphed step takes one shape), pinned on a GPU. A copy from
    pageable memory to the device first waits for every kernel queued before it (CUDA's rule for
    pageable transfers), so each step's batch copy made the host wait for the last step to finish
    before queueing the next: the loop ran at step time plus host time. Pinned batches and the
    prepared loader's non-blocking copy (build_accelerator) let the host run a step ahead."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=per_process_batch_size(accelerator, config), shuffle=True, drop_last=True,
        pin_memory=accelerator.device.type == "cuda", **options,
    )  # fmt: skip


def evaluation_loader(dataset, batch_size: int = 256) -> torch.utils.data.DataLoader:
    """In-order batches for validation, with a random generator of their own: a DataLoader without
    one draws its iterator's base seed from the global random stream every time it is iterated (a
    prepared one too), the stream that dropout and the prior's label dropout draw from, so how often
    a run validated changed the weights it trained."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, generator=torch.Generator())


def batches_from(accelerator: Accelerator, loader, batches_seen: int) -> Iterator:
    """Endless batches continuing after `batches_seen`: each epoch has its seeded shuffle, and a
    resumed run skips what it already consumed, so it sees exactly the uninterrupted order."""
    if len(loader) == 0:
        raise ValueError("the training split holds fewer examples than one batch; lower batch_size")
    while True:
        epoch, offset = divmod(batches_seen, len(loader))
        loader.set_epoch(epoch)
        for batch in accelerator.skip_first_batches(loader, offset) if offset else loader:
            batches_seen += 1
            yield batch


class NonFiniteGuard:
    """Watches the loss for non-finite values without stalling the device.

    nonfinite_loss=skip must decide before each update, so it reads the loss on the host every
    step (a sync). nonfinite_loss=stop keeps, on the device, the first step whose loss was not
    finite and which terms were; `verify()` reads that (the one sync) and raises naming them. The
    training scripts verify before every log line, validation and checkpoint, so a checkpoint
    never holds the weights of a non-finite step and a GPU step never waits for Python.
    """

    def __init__(self, accelerator: Accelerator, config: RunConfig):
        self.accelerator, self.config = accelerator, config
        self.names: list[str] = []
        self.first_step = torch.full((1,), -1.0, device=accelerator.device)
        self.flags: torch.Tensor | None = None  # which terms were non-finite at first_step

    def step_ok(self, terms: dict[str, torch.Tensor], total: torch.Tensor, step: int | torch.Tensor) -> bool:
        """False when this step must be skipped (skip mode); stop mode records and returns True.
        `step` may be a 0-dim device tensor (a graphed step's number)."""
        if self.config.nonfinite_loss == "skip":
            finite = self.accelerator.reduce(torch.isfinite(total.detach()).float().reshape(1), "sum").item()
            if finite == self.accelerator.num_processes:
                return True
            self.accelerator.print(f"non-finite loss at step {step} in term(s) {self._bad(terms)}: skipping the step")
            return False
        self.names = list(terms)
        flags = torch.stack([~torch.isfinite(value.detach()).all() for value in terms.values()]).float()
        if self.flags is None:
            self.flags = torch.zeros_like(flags)
        new = (flags.sum() > 0) & (self.first_step < 0)
        # In place: a graphed step (infra/step_graph.py) replays these very kernels on this storage.
        self.first_step.copy_(torch.where(new, step if isinstance(step, torch.Tensor) else float(step), self.first_step))
        self.flags.copy_(torch.where(new, flags, self.flags))
        return True

    def verify(self) -> None:
        """Raise `FloatingPointError` (stop mode) if any step so far had a non-finite loss."""
        if self.config.nonfinite_loss != "stop" or self.flags is None:
            return
        rows = self.accelerator.gather(torch.cat([self.first_step, self.flags]).reshape(1, -1)).tolist()
        bad_rows = [row for row in rows if row[0] >= 0]
        if not bad_rows:
            return
        step, *flags = min(bad_rows)
        bad = [name for name, flag in zip(self.names, flags) if flag]
        raise FloatingPointError(
            f"non-finite loss at step {int(step)} in term(s) {bad}; lower learning_rate or set nonfinite_loss=skip. "
            f"Checkpoints in {Path(self.config.output_dir) / 'checkpoints'} are intact"
        )

    def verify_if_due(self, step: int) -> None:
        """`verify` on the steps that log, validate or checkpoint (and the first and last)."""
        config = self.config
        if step in (1, config.max_steps) or any(
            step % every == 0 for every in (config.log_every, config.validate_every, config.checkpoint_every)
        ):
            self.verify()

    @staticmethod
    def _bad(terms: dict[str, torch.Tensor]) -> list[str]:
        return [name for name, value in terms.items() if not torch.isfinite(value).all()] or ["(on another process)"]


@dataclass
class Optimization:
    """A stage's optimizer and its learning-rate schedule (stepped once per optimizer step)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


def backward_and_step(accelerator: Accelerator, model, optimizer, loss: torch.Tensor, config: RunConfig) -> None:
    """Backward, gradient clipping on synchronising steps (max_grad_norm > 0), update, zero grads."""
    accelerator.backward(loss)
    if config.max_grad_norm and accelerator.sync_gradients:
        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class TrainingLoop:
    """The step loop both training scripts run around their own update:

        loop = TrainingLoop(accelerator, config, loader, position, scheduler, guard, saved_config, "prior")
        for batch in loop:  # one (micro-)batch at a time, from where a resumed run stopped
            with accelerator.accumulate(model):
                ran = <the update>  # False when nonfinite_loss=skip skipped it
            if not loop.optimizer_stepped(ran):  # a micro-batch, or a skipped step
                continue
            <log, validate when due (loop.step, loop.progress)>
        if loop.stopped_at_time_limit:
            return loop.stop_at_time_limit()

    It counts optimizer steps to max_steps, steps the schedule once per optimizer step, verifies
    the non-finite guard when due (before anything is logged or saved), shows a progress bar, and
    after each step's body checkpoints when due, past time_limit_minutes, or on SIGTERM / SIGINT
    (infra.polite_stop: checkpoint, then exit 128 + the signal)."""

    def __init__(self, accelerator: Accelerator, config: RunConfig, loader, position, scheduler, guard: NonFiniteGuard,
                 saved_config: dict, description: str):  # fmt: skip
        self.accelerator, self.config, self.loader, self.scheduler, self.guard = accelerator, config, loader, scheduler, guard
        self.saved_config, self.description = saved_config, description
        self.step, self.batches_seen = position.step, position.batches_seen
        self.stopped_at_time_limit = False
        self.progress = None
        self._stepped = False

    def __iter__(self) -> Iterator:
        config, accelerator = self.config, self.accelerator
        started = time.monotonic()  # for time_limit_minutes
        self.progress = tqdm(total=config.max_steps, initial=self.step, desc=self.description,
                             disable=not accelerator.is_main_process)  # fmt: skip
        with PoliteStop(accelerator, config.log_every) as stop:
            for batch in batches_from(accelerator, self.loader, self.batches_seen):
                if self.step >= config.max_steps:  # resumed from a finished run's last checkpoint
                    break
                self.batches_seen += 1
                self._stepped = False
                yield batch
                if not self._stepped:
                    continue
                if checkpoint_if_due(accelerator, config, self.step, self.batches_seen, self.saved_config, started, stop):
                    self.stopped_at_time_limit = True
                    return
                if self.step >= config.max_steps:
                    break
        self.progress.close()

    def optimizer_stepped(self, update_ran: bool) -> bool:
        """After the update: True when it was an optimizer step (the last micro-batch of an
        accumulation, not skipped), which this counts, schedules and checks."""
        if not update_ran or not self.accelerator.sync_gradients:
            return False
        self.scheduler.step()
        self.step += 1
        self.progress.update(1)
        self.guard.verify_if_due(self.step)
        self._stepped = True
        return True

    def stop_at_time_limit(self) -> dict:
        """End a run stopped by time_limit_minutes (its checkpoint is saved): say how to go on."""
        self.accelerator.print(
            f"time_limit_minutes={self.config.time_limit_minutes} reached at step {self.step}: checkpoint saved; "
            "run the same command with resume=latest to go on"
        )
        self.progress.close()
        self.accelerator.end_training()
        return {"stopped_at_step": self.step}
