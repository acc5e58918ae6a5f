"""A polite stop: on SIGTERM or SIGINT a training run finishes the step it is in, saves a
checkpoint and exits with the conventional status (128 + the signal's number); a second signal
stops at once.

A cluster scheduler or a spot instance sends SIGTERM some time before it kills; Ctrl-C sends
SIGINT. The handler only sets a flag; the training loop asks `requested(step)` after each step.
With several processes every rank must save the same step or none does, so the ranks agree on the
flag through one all-reduce, on log steps only (where the loop reads the device anyway: no extra
host sync on a GPU step); a single process looks at it after every step.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

import torch

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A repeat within this many seconds is the first signal delivered twice, not a second request: a
# launcher (torchrun's agent) forwards to its workers the signal their process group already got.
REPEAT_SECONDS = 1.0


class PoliteStop:
    """`with PoliteStop(accelerator, log_every) as stop:` around the loop; `stop.requested(step)`
    after each step says whether to checkpoint and leave; `stop.exit(...)` leaves."""

    def __init__(self, accelerator, log_every: int):
        self.accelerator, self.log_every = accelerator, log_every
        self.received: int | None = None  # the first signal's number
        self.received_at = 0.0
        self.previous: dict[int, object] = {}

    def __enter__(self) -> PoliteStop:
        if threading.current_thread() is threading.main_thread():  # Python's rule for handlers
            for number in SIGNALS:
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, number, frame) -> None:
        if self.received is not None:
            if time.monotonic() - self.received_at < REPEAT_SECONDS:
                return
            signal.signal(number, signal.SIG_DFL)  # a second signal: stop now, as with no handler
            signal.raise_signal(number)
            return
        self.received, self.received_at = number, time.monotonic()
        print(
            f"\n{signal.Signals(number).name} received: finishing this step and saving a checkpoint "
            "(send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def requested(self, step: int) -> bool:
        """Whether every process should checkpoint this step and stop."""
        if self.accelerator.num_processes == 1:
            return self.received is not None
        if step % self.log_every:
            return False
        flag = torch.tensor([float(self.received or 0)], device=self.accelerator.device)
        agreed = int(self.accelerator.reduce(flag, "max").item())
        if agreed and self.received is None:
            self.received = agreed  # another rank got it first; this one stops with it
        return bool(agreed)

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else "no signal"

    def exit(self, step: int, checkpoint) -> None:
        """After the checkpoint: say where the run stopped and leave with 128 + the signal's number."""
        self.accelerator.print(
            f"stopped by {self.name} at step {step}: checkpoint {checkpoint} saved; "
            "run the same command with resume=latest to go on"
        )
        self.accelerator.end_training()
        raise SystemExit(128 + self.received)
