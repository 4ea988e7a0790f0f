"""Fixtures shared by every test (helpers are modules in tests/helpers/, imported from there)."""

from __future__ import annotations

import pytest

from tests.helpers.chat_server import Server
from tests.helpers.models import tiny_vit


@pytest.fixture
def make_vit():
    return tiny_vit


@pytest.fixture
def serve():
    """`serve(script)` starts a scripted chat-completions server on 127.0.0.1 (tests/helpers/chat_server.py)."""
    servers = []

    def start(script):
        server = Server(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
