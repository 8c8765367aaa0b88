from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.notifications.support import SmtpServer, start_smtp


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_smtp()
    yield server
    server.controller.stop()
