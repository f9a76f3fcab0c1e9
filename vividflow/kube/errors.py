"""Kubernetes API errors, one type per answer that a caller acts on."""

from __future__ import annotations


class KubeError(Exception):
    """An API request answered with an error status (``reason`` is the Status object's reason)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.reason = reason


class NotFound(KubeError):
    """404: no such object (or namespace)."""


class Conflict(KubeError):
    """409: the object exists already (``reason`` AlreadyExists), or changed since the
    resourceVersion that the write was based on."""


class Gone(KubeError):
    """410: a watch's resourceVersion is older than the server keeps: list again."""


class Invalid(KubeError):
    """400 or 422: the server refuses the object itself; sending it again cannot help."""


class NoCredentials(Exception):
    """Neither in-cluster credentials nor a kubeconfig."""


_BY_STATUS: dict[int, type[KubeError]] = {404: NotFound, 409: Conflict, 410: Gone, 400: Invalid, 422: Invalid}


def error_for(status: int, message: str, reason: str = "") -> KubeError:
    return _BY_STATUS.get(status, KubeError)(status, message, reason)
