"""The training loop shared by trainers whose episodes are played elsewhere (worker processes, Ray actors).

Training runs in segments: every env/actor plays whole episodes until an evaluation, a checkpoint or the end is due,
then the segment drains (the episodes in flight finish) and ``_between_segments`` evaluates and checkpoints with no
episode in progress, so a checkpoint never holds half an episode and ``resume=true`` is exact.
"""

from __future__ import annotations

import time
from typing import Any

from robotrl import preemption
from robotrl.workflows.train import GracefulInterrupt, Trainer


class SegmentedTrainer(Trainer):
    """:class:`Trainer` with the segment loop; subclasses implement ``_run_segment`` and may override
    ``_before_segments`` (set-up after a resume, before the first evaluation)."""

    discarded_episodes = 0  # episodes of a crashed worker / dead actor, played again from their seed
    discarded_steps = 0

    def _extra_counters(self) -> dict[str, Any]:
        return {"discarded_episodes": self.discarded_episodes, "discarded_steps": self.discarded_steps}

    def _restore_extra_counters(self, counters: dict[str, Any]) -> None:
        self.discarded_episodes = int(counters.get("discarded_episodes", 0))
        self.discarded_steps = int(counters.get("discarded_steps", 0))

    def _before_segments(self) -> None:
        """Called once before the first evaluation of :meth:`train`."""

    def _train(self) -> dict[str, Any]:
        cfg = self.cfg
        self._t0 = time.perf_counter()
        total_steps = int(cfg.frames) // self.action_repeat
        seed_steps = int(cfg.seed_frames) // self.action_repeat
        self._before_segments()
        if self.frame >= self.next_eval_frame and cfg.eval_episodes > 0:
            self.evaluate()
        progress, task = self._make_progress(total_steps)
        done = self.step >= total_steps
        with progress, GracefulInterrupt() as interrupt:
            while not done:
                self._run_segment(total_steps, seed_steps, interrupt)
                done = self._between_segments(total_steps)
        return self.finish()

    def _run_segment(self, total_steps: int, seed_steps: int, interrupt: GracefulInterrupt) -> None:
        raise NotImplementedError

    def _due(self, total_steps: int) -> bool:
        """An evaluation, a checkpoint or the end is due: the segment drains."""
        eval_due = self.frame >= self.next_eval_frame and self.cfg.eval_episodes > 0
        ckpt_due = self.frame >= self.next_ckpt_frame or preemption.requested()  # preempted: drain, checkpoint
        return eval_due or ckpt_due or self.step >= total_steps

    def _between_segments(self, total_steps: int) -> bool:
        """No episode in progress: evaluate and checkpoint when due; True when training is done."""
        cfg = self.cfg
        done = self.step >= total_steps
        final_eval_missing = done and (self.last_eval is None or self.last_eval["frame"] != self.frame)
        if (self.frame >= self.next_eval_frame or final_eval_missing) and cfg.eval_episodes > 0:
            self.evaluate()
        if self.frame >= self.next_ckpt_frame or done:
            while self.next_ckpt_frame <= self.frame:
                self.next_ckpt_frame += int(cfg.checkpoint_every_frames)
            self.save()
        if not done and preemption.requested():
            self._checkpoint_and_hand_off()
        return done
