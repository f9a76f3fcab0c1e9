"""Vivid Flow: image + prompt -> video, as a REST API, a Kubernetes operator and a runner."""

__version__ = "0.1.0"
