"""The rebase work one writer round may spend before further deltas are deferred to the next."""

import contextlib
import contextvars


class WorkBudget:
    __slots__ = ("limit", "spent")

    def __init__(self, limit: int):
        self.limit = limit
        self.spent = 0


current_budget: contextvars.ContextVar[WorkBudget | None] = contextvars.ContextVar("rebase_work", default=None)


@contextlib.contextmanager
def rebase_work_budget(limit: int):
    """Within this block, once `limit` units of rebase work are spent, further deltas of
    the batch raise Deferred instead of being applied (the first always runs), so one
    expensive change commits in a round of its own rather than holding up the rest."""
    token = current_budget.set(WorkBudget(limit))
    try:
        yield
    finally:
        current_budget.reset(token)


def rebase_work(changes: int, versions: int, log_changes: int = 0) -> int:
    """The units of rebase work: every change carried over every version, plus every change
    of the log walked once (a unit is one to three microseconds)."""
    return changes * versions + log_changes
