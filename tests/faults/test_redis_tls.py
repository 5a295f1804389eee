"""REDIS_URL with a password and TLS (`rediss://`): web, worker and RQ work against a Redis that speaks only
TLS and requires AUTH, trusting a private CA named in the URL (`?ssl_ca_certs=`); the password is never
logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis

from approvals.store import Status
from fixtures.redis_proc import RedisProc
from fixtures.tls import make_tls_files
from tests.faults.conftest import Scenario, scenario_on
from tests.faults.test_redis import DURABLE, agent, start_worker

CHANNEL = "C0INCIDENT"
PASSWORD = "tls-redis-pa55/w@rd with spaces"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[RedisProc]:
    server = RedisProc(extra_args=DURABLE, password=PASSWORD, tls=make_tls_files(tmp_path)).start()
    yield server
    server.stop()


def test_a_password_protected_tls_redis_serves_web_worker_and_rq(
    scenario: Scenario, tls_redis: RedisProc, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert tls_redis.url.startswith("rediss://")
    # The server really requires both: plain TCP and a wrong password are turned away.
    with pytest.raises(sync_redis.ConnectionError):
        sync_redis.Redis(port=tls_redis.port, socket_connect_timeout=2, socket_timeout=2).ping()
    wrong = tls_redis.url.replace("pa55", "guess")
    with pytest.raises(sync_redis.AuthenticationError):
        sync_redis.Redis.from_url(wrong).ping()
    caplog.set_level(logging.DEBUG)
    with scenario_on(scenario, tls_redis) as s:  # the web process (Bolt, linking, clicks) over rediss://
        for person in ("alice", "bob", "carol"):
            s.link(person)
        s.world.anthropic.set_default(agent)
        mention = s.ingress.app_mention("U0ALICE", CHANNEL, "kill the runaway backfill")
        assert s.ingress.post(mention).status == 200
        s.work()  # an RQ worker in this process over rediss://
        (approval,) = s.approvals(CHANNEL, mention.event["ts"])
        s.click("U0BOB", approval)
        s.click("U0CAROL", approval)
        worker = start_worker(s.env, tls_redis)  # `chatops worker --burst`: a forking RQ worker
        assert worker.returncode == 0, worker.stderr.decode()[-2000:]
        assert s.approval(approval.id).status == Status.SUCCEEDED
        assert s.world.servers["presto"].ledger.count("kill_query") == 1
        logs = worker.stderr.decode(errors="replace") + caplog.text
        assert "Successfully completed bot.jobs.execute_approved" in logs
        assert PASSWORD not in logs
        assert "pa55" not in logs
        assert "pa55" not in repr(s.settings) + str(s.settings)
