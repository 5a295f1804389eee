"""Pytest plugin: no test may reach anything but loopback.

Loaded for every run through `addopts = -p tests.netguard`. It refuses outbound connects and DNS look-ups of
non-loopback names in this process; subprocesses that tests start inherit CHATOPS_NETGUARD=1, which
`bot.netguard` honours the same way.
"""

from __future__ import annotations

import os

import pytest

from bot import netguard


def pytest_configure(config: pytest.Config) -> None:
    os.environ["CHATOPS_NETGUARD"] = "1"
    netguard.install()
