"""The client's progress display, rendered to a rich Console on a StringIO: what a terminal shows
(a bar, queue position or percent, elapsed time) and the plain lines a log gets, for each state."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from vividflow.client.progress import JobProgress, describe

JOB_ID = "c2c625a3-0fc9-44ba-90e4-25d37428607a"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, color_system=None, width=100), out


def rendered(display: JobProgress) -> str:
    target, out = console(terminal=False)
    target.print(display.renderable())
    return out.getvalue().rstrip()


def status(state: str, **fields: Any) -> dict[str, Any]:
    return {"job_id": JOB_ID, "status": state, "model": "veo3.1", **fields}


def test_describe_each_state() -> None:
    assert describe(status("queued", queue_position=0)) == ("queued", "next in line")
    assert describe(status("queued", queue_position=1)) == ("queued", "1 job ahead")
    assert describe(status("queued", queue_position=3)) == ("queued", "3 jobs ahead")
    assert describe(status("processing", progress=40)) == ("processing", "40%")
    assert describe(status("processing")) == ("processing", "0%")
    assert describe(status("completed", result_url="http://x/y.mp4")) == ("completed", "100%")
    failed = status("failed", error_message="Veo refused the image.", failure_reason="invalid_input")
    assert describe(failed) == ("failed", "Veo refused the image. (invalid_input)")
    assert describe(status("cancelled")) == ("cancelled", "")


def test_the_terminal_view_shows_position_then_percent_then_the_end() -> None:
    """Without colours the bar's done part is ``━`` and the rest blank; a pulsing (queued) bar is full."""
    clock = Clock()
    target, _ = console(terminal=True)
    display = JobProgress(target, JOB_ID, get_time=clock)
    assert display.live

    display.update(status("queued", queue_position=2))
    clock.now += 5
    assert rendered(display) == f"c2c625a3 queued     {'━' * 30} 2 jobs ahead 0:00:05"

    display.update(status("processing", progress=40))
    clock.now += 70
    assert rendered(display) == f"c2c625a3 processing {'━' * 12}{' ' * 18} 40% 0:01:15"

    display.update(status("completed", result_url="http://x/y.mp4"))
    clock.now += 30  # the clock stopped with the job
    assert rendered(display) == f"c2c625a3 completed  {'━' * 30} 100% 0:01:15"


def test_failed_and_cancelled_jobs_keep_their_bar_and_say_why() -> None:
    clock = Clock()
    display = JobProgress(console(terminal=True)[0], JOB_ID, get_time=clock)
    display.update(status("processing", progress=50))
    clock.now += 3
    display.update(status("failed", error_message="Out of GPU memory.", failure_reason="out_of_memory"))
    clock.now += 100
    bar = "━" * 15 + " " * 15
    assert rendered(display) == f"c2c625a3 failed     {bar} Out of GPU memory. (out_of_memory) 0:00:03"

    other = JobProgress(console(terminal=True)[0], JOB_ID, get_time=clock)
    other.update(status("queued", queue_position=0))
    other.update(status("cancelled"))
    assert rendered(other) == f"c2c625a3 cancelled  {' ' * 30}  0:00:00"


def test_a_log_gets_one_plain_line_per_change() -> None:
    clock = Clock()
    target, out = console(terminal=False)
    with JobProgress(target, JOB_ID, get_time=clock) as display:
        assert not display.live
        display.update(status("queued", queue_position=1))
        display.update(status("queued", queue_position=1))  # no change, no line
        clock.now += 2
        display.update(status("queued", queue_position=0))
        clock.now += 61
        display.update(status("processing", progress=10))
        display.update(status("processing", progress=90))
        clock.now += 1
        display.update(status("completed", result_url="http://x/y.mp4"))
    assert out.getvalue().splitlines() == [
        "[0:00:00] c2c625a3 queued 1 job ahead",
        "[0:00:02] c2c625a3 queued next in line",
        "[0:01:03] c2c625a3 processing 10%",
        "[0:01:03] c2c625a3 processing 90%",
        "[0:01:04] c2c625a3 completed 100%",
    ]
