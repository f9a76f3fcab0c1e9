"""A job's progress on the terminal (rich): its state, a bar (pulsing while queued, the percent while
processing), the queue position or percent, and the time since following began. On a console that is
not a terminal (a log, a pipe) it prints one plain line per change instead."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

Body = dict[str, Any]


def describe(status: Body) -> tuple[str, str]:
    """(state, detail) of a status body: ``("queued", "2 jobs ahead")``, ``("processing", "40%")``, …"""
    state = str(status.get("status") or "unknown")
    if state == "queued":
        ahead = status.get("queue_position")
        if not isinstance(ahead, int):
            return state, ""
        return state, "next in line" if ahead == 0 else f"{ahead} job{'s' if ahead != 1 else ''} ahead"
    if state == "processing":
        return state, f"{_percent(status)}%"
    if state == "completed":
        return state, "100%"
    if state == "failed":
        reason = status.get("failure_reason")
        message = str(status.get("error_message") or "")
        return state, f"{message} ({reason})" if reason else message
    return state, ""


class JobProgress:
    """Shows a job's statuses as :meth:`update` receives them; use as a context manager."""

    def __init__(
        self, console: Console, job_id: str, *, get_time: Callable[[], float] = time.monotonic
    ) -> None:
        self.console = console
        self.live = console.is_terminal and not console.is_dumb_terminal
        self._get_time = get_time
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            TextColumn("{task.fields[state]:<10}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            get_time=get_time,
            auto_refresh=self.live,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task: TaskID = self._progress.add_task(job_id[:8], total=None, state="waiting", detail="")
        self._line: tuple[str, str] | None = None

    def __enter__(self) -> JobProgress:
        if self.live:
            self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.live:
            self._progress.stop()

    def update(self, status: Body) -> None:
        state, detail = describe(status)
        total: float | None = 100
        completed: float = 0
        if state == "queued":
            total = None  # a pulsing bar: no percent yet
        elif state == "processing":
            completed = _percent(status)
        elif state == "completed":
            completed = 100
        else:
            completed = self._progress.tasks[0].completed
        self._progress.update(self._task, total=total, completed=completed, state=state, detail=detail)
        if state not in ("queued", "processing"):
            self._progress.stop_task(self._task)  # the clock stops with the job
        if self.live:
            self._progress.refresh()
        elif (state, detail) != self._line:
            self.console.print(self.line(), highlight=False, markup=False)
        self._line = (state, detail)

    def renderable(self) -> RenderableType:
        """What the terminal shows now."""
        return self._progress.get_renderable()

    def line(self) -> str:
        """The plain-text form of the current state: ``[0:00:12] 1a2b3c4d processing 40%``."""
        task = self._progress.tasks[0]
        elapsed = timedelta(seconds=max(0, int(task.elapsed or 0)))
        state, detail = task.fields["state"], task.fields["detail"]
        return " ".join(part for part in (f"[{elapsed}]", task.description, state, detail) if part)


def _percent(status: Body) -> int:
    value = status.get("progress")
    return max(0, min(100, int(value))) if isinstance(value, int | float) else 0
