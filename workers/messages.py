"""What a task message asks a worker to do (`Job`), and the follow-up it asks to send (`NextTask`)."""

from __future__ import annotations

from dataclasses import dataclass

from workers.attempts import AttemptRef


@dataclass(frozen=True)
class Job:
    """One delivery of `generate_image(batch_id, index, attempt, model, recheck=)`."""

    batch_id: str
    index: int
    attempt: int
    model: str
    task_id: str | None = None
    recheck: int = 0  # how many times this task found the attempt claimed by another live run
    priority: str = "normal"  # the batch's priority (high, normal, low): its place in the slot line

    @property
    def ref(self) -> AttemptRef:
        return AttemptRef(self.batch_id, self.index, self.attempt)


@dataclass(frozen=True)
class NextTask:
    """The follow-up the task layer sends after this run: the next attempt (a retry or a
    fallback), or the same attempt later (a requeue or a recheck)."""

    attempt: int
    model: str
    countdown: float = 0.0
    recheck: int = 0
    prompt: str = ""
