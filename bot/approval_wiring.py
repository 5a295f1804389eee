"""The one place the approval service is put together from a unit of work's clients (a web process, a job).

Everything that requests, decides, runs or sweeps approvals gets its service (or the Slack click handling
over it) from here, over the one ApprovalStore that `open_services` built.
"""

from __future__ import annotations

from approvals.action_lease import ActionLeases
from approvals.reminders import ReminderSchedule
from approvals.service import ApprovalService
from bot.approval_clicks import ApprovalClicks
from bot.approval_notices import ApprovalNotices
from bot.queues import Queues
from bot.services import Services

__all__ = ["approval_clicks", "approval_service"]


def approval_service(svc: Services, queues: Queues) -> ApprovalService:
    settings = svc.settings
    notices = ApprovalNotices(
        svc.poster, svc.approvals, svc.snapshot, svc.linking, mirror_channel=settings.approvals_channel
    )
    return ApprovalService(
        store=svc.approvals,
        notices=notices,
        queue=queues,
        identities=svc.broker,
        tools=svc.gateway,
        audit=svc.audit,
        leases=ActionLeases(svc.redis),
        ttl_seconds=float(settings.approval_ttl_seconds),
        lease_seconds=float(settings.turn_lease_seconds),
        reminders=ReminderSchedule(svc.redis),
    )


def approval_clicks(svc: Services, queues: Queues) -> ApprovalClicks:
    return ApprovalClicks(approval_service(svc, queues), svc.linking)
