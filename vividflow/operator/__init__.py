"""The VideoJob operator: each VideoJob becomes one batch/v1 Job running the runner; what the Job and
its Pods do flows back into the VideoJob's ``status``.

- ``handlers``: the kopf handlers (watch events of VideoJobs, Jobs, Pods; startup, probe, login).
- ``controller``: cache + work queue + resync thread behind the handlers.
- ``reconciler``: one pass over one VideoJob (observe, decide, act).
- ``status``: the pure decision: the status a VideoJob should have, from what exists; ``observed``
  reads Jobs and Pods for it; ``transitions``: the status patch and the Events a change makes.
- ``jobs``: the pure Job manifest builder; ``admission``: the GPU concurrency limit.
- ``cache``, ``workqueue``, ``events``, ``config``, ``metrics``: the supporting parts; ``main``: the entry.

Requests go through :mod:`vividflow.kube`; kopf delivers the watch events, peering and the probe.
"""
