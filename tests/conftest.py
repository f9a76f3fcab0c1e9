"""Fixtures shared by the whole suite live in tests/fixtures/, one module per real service."""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.gcs_emulator",
    "tests.fixtures.https_server",
    "tests.fixtures.tiny_wan",
    "tests.fixtures.fake_vertex",
    "tests.fixtures.kube",
]
