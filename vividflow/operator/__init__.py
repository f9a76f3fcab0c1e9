"""The VideoJob operator: each VideoJob becomes one batch/v1 Job running the runner; what the Job and
its Pods do flows back into the VideoJob's ``status``.

- ``handlers``: the kopf handlers (watch events of VideoJobs, Jobs, Pods; startup, probe, login).
- ``controller``: cache + work queue + resync thread behind the handlers.
- ``reconciler``: one reconcile of one VideoJob (reads, decides, acts, writes the status).
- ``status``: the pure decision: the status a VideoJob should have, from what exists.
- ``jobs``: the pure Job manifest builder; ``admission``: the GPU concurrency limit.
- ``cache``, ``workqueue``, ``kube``, ``events``, ``config``: the supporting parts; ``main``: the entry.
"""
