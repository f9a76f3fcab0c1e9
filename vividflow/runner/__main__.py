"""``python -m vividflow.runner``: run one job, as a Kubernetes Job's container does."""

from vividflow.runner.cli import main

if __name__ == "__main__":
    main()
