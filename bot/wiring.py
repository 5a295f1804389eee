"""The composition root: a process's clients built once from settings, and every flow built from them.

`open_wiring` opens the clients of one unit of work (the web process, a worker's turn pool, one RQ job);
`Wiring`'s methods build each flow from the two to four narrow ports it uses. Nothing below the roots (the
web app, bot.jobs) ever receives a `Wiring`: listeners, flows and stores get only what they use.

Async clients are built per job on purpose: RQ runs each async job on a fresh event loop, and an httpx2 or
Redis client bound to a previous loop must not be reused. Building them is cheap (one shared TLS context).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import httpx2
import redis.asyncio as aioredis

from agent.loop import Limits
from agent.usage import price_for
from approvals.action_lease import ActionLeases
from approvals.audit import Audit, link_record
from approvals.feedback import Feedback
from approvals.home_records import HomeRecords
from approvals.model_bill import UsageBook
from approvals.questions import QuestionStore
from approvals.reminders import ReminderSchedule
from approvals.seal import seal_keys
from approvals.service import ApprovalService
from approvals.stops import TurnStops
from approvals.store import ApprovalStore
from approvals.tallies import Tallies
from approvals.turns import TurnStore
from approvals.workflow_runs import WorkflowRunStore
from bot.approval_clicks import ApprovalClicks
from bot.approval_notices import ApprovalNotices
from bot.attachments import SlackFiles, file_origins
from bot.clients import company_provider, model_client, redis_pool
from bot.events import MAX_INPUT_CHARS
from bot.home import Home
from bot.home_listeners import Accounts
from bot.identity import BotIdentity
from bot.metrics import Metrics, metrics_from_audit
from bot.poster import Poster, make_slack_client, slack_session
from bot.question_card import SlackQuestionCards
from bot.queues import Queues
from bot.redis_clients import sync_client
from bot.settings import Settings
from bot.slack_people import SlackPeople
from bot.turn_output import SlackTurnOutput
from bot.workflow_output import SlackWorkflowOutput
from flows.access import ToolAccess
from flows.admission import Admission
from flows.answer import TurnAnswer
from flows.linking import Linking, LinkResult
from flows.recovery import TurnRecovery
from flows.server_linking import ServerLinking
from flows.server_questions import ServerQuestions
from flows.tool_audit import TurnAudit
from flows.turn import TurnFlow
from flows.workflow import WorkflowFlow
from flows.workflow_catalog import WorkflowCatalog
from flows.workflow_requests import WorkflowRequests
from llm.anthropic import AnthropicModel
from mcp_clients.egress import outbound_client
from mcp_clients.gateway import Gateway
from mcp_clients.listing import ListingCache
from mcp_clients.provider import Provider
from mcp_clients.sealing import Sealer
from mcp_clients.server_oauth import PerServerAuth
from mcp_clients.tokens import TokenBroker
from registry_cache.client import fetch_all
from registry_cache.snapshot import SharedSnapshot

__all__ = ["Wiring", "open_wiring"]


@dataclass
class Wiring:
    """One unit of work's clients. Held by the composition roots only (bot.web, bot.jobs) and by tests."""

    settings: Settings
    bot: BotIdentity
    redis: aioredis.Redis
    http: httpx2.AsyncClient
    queues: Queues
    provider: Provider
    broker: TokenBroker
    snapshot: SharedSnapshot
    gateway: Gateway
    poster: Poster
    store: TurnStore
    approvals: ApprovalStore  # the one approval store of this unit of work
    audit: Audit
    linking: Linking
    metrics: Metrics
    server_linking: ServerLinking  # servers with their own authorization server: Connect, Disconnect
    # Built on first use: approved actions and sweeps never call the model, and building the client
    # costs tens of milliseconds in a freshly forked job.
    build_model: Callable[[], AnthropicModel | None]
    _model: list[AnthropicModel | None] = field(default_factory=list)
    _catalog: WorkflowCatalog | None = None

    @property
    def model(self) -> AnthropicModel | None:
        if not self._model:
            self._model.append(self.build_model())
        return self._model[0]

    # ----- the flows ------------------------------------------------------------------------------------

    def approval_service(self) -> ApprovalService:
        settings = self.settings
        notices = ApprovalNotices(
            self.poster,
            self.approvals,
            self.snapshot,
            self.linking,
            mirror_channel=settings.approvals_channel,
        )
        return ApprovalService(
            store=self.approvals,
            notices=notices,
            queue=self.queues,
            identities=self.broker,
            tools=self.gateway,
            audit=self.audit,
            leases=ActionLeases(self.redis),
            ttl_seconds=float(settings.approval_ttl_seconds),
            lease_seconds=float(settings.turn_lease_seconds),
            reminders=ReminderSchedule(self.redis),
        )

    def approval_clicks(self) -> ApprovalClicks:
        return ApprovalClicks(self.approval_service(), self.linking)

    def turn_output(self) -> SlackTurnOutput:
        return SlackTurnOutput(
            self.poster, HomeRecords(self.redis), redis=self.redis, streaming=self.settings.streaming
        )

    def turn_flow(self) -> TurnFlow:
        settings, approvals, tallies = self.settings, self.approval_service(), Tallies(self.redis)
        answer = TurnAnswer(
            self.store,
            self.turn_output(),
            ToolAccess(self.broker, self.linking, self.gateway, self.server_linking),
            approvals,
            approvals,
            model=self.model,
            admission=Admission(
                tallies, per_minute=settings.user_turns_per_minute, max_chars=MAX_INPUT_CHARS
            ),
            audit=TurnAudit(self.audit, tallies),
            bill=self.usage_book(),
            stops=TurnStops(self.redis),
            files=self.slack_files(),
            questions=ServerQuestions(
                QuestionStore(self.redis),
                SlackQuestionCards(self.poster),
                timeout=float(settings.elicitation_timeout_seconds),
            ),
            limits=Limits(
                max_steps=settings.max_steps,
                max_seconds=float(settings.max_turn_seconds),
                max_output_tokens=settings.max_output_tokens,
                tool_output_max_chars=settings.tool_output_max_chars,
                budget_tokens=settings.context_budget_tokens,
                tool_search=settings.tool_search,
                tool_search_threshold=settings.tool_search_threshold,
            ),
        )
        lease = float(settings.turn_lease_seconds)
        return TurnFlow(self.store, answer, self.queues, self.metrics, lease_seconds=lease)

    def slack_files(self) -> SlackFiles:
        """Attached files, downloaded with the bot token from Slack's file host only."""
        settings = self.settings
        token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
        return SlackFiles(
            self.http,
            token,
            origins=file_origins(str(settings.slack_api_url)),
            text_max_bytes=settings.file_text_max_bytes,
            timeout_seconds=settings.file_timeout_seconds,
        )

    def usage_book(self) -> UsageBook:
        """Where each turn's model usage is recorded (audit, per person and per hour), priced."""
        model = self.settings.chatops_model
        return UsageBook(self.redis, self.audit, model, price_for(model, self.settings.prices))

    def workflow_runs(self) -> WorkflowRunStore:
        return WorkflowRunStore(self.redis, replication=self.settings.redis_replication)

    def recovery(self) -> TurnRecovery:
        return TurnRecovery(self.store, self.turn_output(), self.queues)

    def _workflows(self) -> WorkflowCatalog:
        if self._catalog is None:  # one per wiring: it re-reads the folder only when the folder changed
            self._catalog = WorkflowCatalog(self.settings.workflows_dir)
        return self._catalog

    def workflow_flow(self) -> WorkflowFlow:
        return WorkflowFlow(
            runs=self.workflow_runs(),
            catalog=self._workflows(),
            output=SlackWorkflowOutput(self.poster),
            tools=self.gateway,
            approvals=self.approval_service(),
            identities=self.broker,
            linking=self.linking,
            registry=self.snapshot,
            audit=self.audit,
            lease_seconds=float(self.settings.turn_lease_seconds),
        )

    def workflow_requests(self) -> WorkflowRequests:
        return WorkflowRequests(
            runs=self.workflow_runs(),
            catalog=self._workflows(),
            registry=self.snapshot,
            identities=self.broker,
            schedule=self.queues,
        )

    def home(self) -> Home:
        return Home(
            identities=self.broker,
            linking=self.linking,
            registry=self.snapshot,
            approvals=self.approvals,
            listings=self.gateway.listings,
            slack=self.poster,
            turns=self.store,
            records=HomeRecords(self.redis),
            runs=WorkflowRunStore(self.redis),
            servers=self.server_linking,
            bill=self.usage_book(),
        )

    def accounts(self) -> Accounts:
        return Accounts(self.broker, self.server_linking, self.snapshot, self.audit)

    def feedback(self) -> Feedback:
        return Feedback(self.redis)

    def questions(self) -> QuestionStore:
        return QuestionStore(self.redis)

    def next_sweep(self) -> None:
        """The sweep that just ran hands the chain on: its marker cleared, the next one scheduled."""
        self.queues.connection.delete("chatops:sweep-scheduled")
        self.queues.schedule_sweep()

    async def ping(self) -> None:
        """Raises RedisError/OSError when Redis does not answer (/readyz)."""
        await self.redis.ping()


@asynccontextmanager
async def open_wiring(settings: Settings, bot: BotIdentity) -> AsyncIterator[Wiring]:
    assert settings.redis_url is not None, "settings.require() guarantees REDIS_URL outside demo/dev"
    redis = redis_pool(settings.redis_url)
    # The registry and the identity provider: connections only to addresses the URL rules allow (SPEC §6).
    http = outbound_client(timeout=httpx2.Timeout(15, connect=5))
    slack = slack_session()
    queues = Queues(sync_client(str(settings.redis_url)))
    wiring = _wire(settings, bot, redis, http, slack, queues)
    try:
        yield wiring
    finally:
        queues.connection.close()
        await wiring.metrics.flush()  # a job's last counters would be lost with the connection otherwise
        await slack.close()
        await wiring.server_linking.auth.aclose()
        await http.aclose()
        await redis.aclose()


def _wire(
    settings: Settings,
    bot: BotIdentity,
    redis: aioredis.Redis,
    http: httpx2.AsyncClient,
    slack: aiohttp.ClientSession,
    queues: Queues,
) -> Wiring:
    provider = company_provider(settings, http)
    masters = [k.get_secret_value() for k in settings.chatops_secret_key]
    sealer, metrics, registry_url = Sealer(masters), Metrics(redis), str(settings.registry_url or "")
    broker = TokenBroker(redis, provider, sealer)
    snapshot = SharedSnapshot(
        redis,
        lambda: fetch_all(http, registry_url),
        ttl_seconds=settings.registry_ttl_seconds,
        stale_max_seconds=settings.registry_stale_max_seconds,
        on_event=metrics.registry_event,
    )
    # Servers with their own authorization server (`auth: oauth`): each person's own tokens for each.
    server_auth = PerServerAuth(redis, sealer, public_url=settings.base_url, snapshot=snapshot, broker=broker)
    gateway = Gateway(
        snapshot,
        broker,
        output_max_chars=settings.tool_output_max_chars,
        listings=ListingCache(redis),
        server_auth=server_auth,
    )
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    poster = Poster(make_slack_client(token, str(settings.slack_api_url), session=slack), redis, bot.team)
    # Metrics are derived from audit records, so the two can never disagree.
    on_record = lambda r: metrics.emit(metrics_from_audit(r))  # noqa: E731
    audit = Audit(redis, retention_days=settings.audit_retention_days, on_record=on_record)

    linking = _linking(
        settings, redis, provider, broker, snapshot, SlackPeople(poster), sealer, audit, queues
    )
    seal, *older_seals = seal_keys(masters)
    return Wiring(
        settings=settings,
        bot=bot,
        redis=redis,
        http=http,
        queues=queues,
        provider=provider,
        broker=broker,
        snapshot=snapshot,
        gateway=gateway,
        poster=poster,
        store=TurnStore(redis, replication=settings.redis_replication),
        approvals=ApprovalStore(
            redis, seal_key=seal, older_seal_keys=older_seals, replication=settings.redis_replication
        ),
        audit=audit,
        linking=linking,
        metrics=metrics,
        server_linking=ServerLinking(redis, server_auth, public_url=settings.base_url),
        build_model=lambda: model_client(settings, metrics),
    )


def _linking(
    settings: Settings,
    redis: aioredis.Redis,
    provider: Provider,
    broker: TokenBroker,
    snapshot: SharedSnapshot,
    people: SlackPeople,
    sealer: Sealer,
    audit: Audit,
    queues: Queues,
) -> Linking:
    async def on_linked(result: LinkResult) -> None:
        """A person linked: audited, and the requests that waited for it run again."""
        who = result.identity
        await audit.record(
            link_record("account_link", "succeeded", team=who.team, user=who.user, sub=who.sub)
        )
        for turn_id in result.waiting:
            queues.enqueue_turn(turn_id, "linked")

    return Linking(
        redis,
        provider,
        broker,
        snapshot,
        people=people,
        sealer=sealer,
        public_url=settings.base_url,
        match_email=settings.oauth_match_email,
        on_linked=on_linked,
    )
