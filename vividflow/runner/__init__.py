"""The runner: one job (image, prompt, parameters) in, one MP4 and its metrics out.

The embedded executor's worker processes and the Kubernetes Job's container both go through
:class:`vividflow.runner.core.Runner`.
"""
