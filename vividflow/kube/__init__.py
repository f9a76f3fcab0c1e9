"""The one Kubernetes client layer of the API backend, the operator and the runner.

- ``config``: credentials (an explicit kubeconfig, else in-cluster, else ``$KUBECONFIG``).
- ``client``: :class:`Kube`, dict-in/dict-out requests on the ``kubernetes`` package's ``ApiClient``.
- ``errors``: one exception per answer a caller acts on (NotFound, Conflict, Gone, Invalid).
- ``paths``: the resource URLs (VideoJobs, Jobs, Pods, Events).
- ``watch``: list-then-watch of one resource, resumed from the last resourceVersion.

The operator's watch streams are kopf's (see ``docs/architecture.md``); every request it makes is ours.
"""
