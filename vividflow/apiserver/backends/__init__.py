"""Where jobs run: ``local`` (embedded executor) or ``kubernetes`` (VideoJob resources)."""
