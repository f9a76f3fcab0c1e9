"""The command-line client (`vividflow generate/status/cancel/history`): it talks to any Vivid Flow
server through the public HTTP API only."""
