"""``python -m vividflow.runner``: run one job, as a Kubernetes Job's container does."""

import time

STARTED = time.monotonic()  # before the heavy imports, so spin_up_time includes them

from vividflow.runner.cli import main  # noqa: E402

if __name__ == "__main__":
    main(started=STARTED)
