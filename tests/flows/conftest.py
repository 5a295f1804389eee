"""The settable clock of the store tests, for admission's sliding minute."""

from tests.approvals.conftest import clock

__all__ = ["clock"]
