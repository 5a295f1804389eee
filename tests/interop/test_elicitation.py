"""A connection that can answer a server's questions says so, and the answer reaches the server.

server-everything offers its elicitation tools only to a client that declares the `elicitation`
capability; a `Connection` declares it exactly when it is given someone to answer (SPEC §7 "Server
questions"). The answer here is the form as the server filled it in: its own defaults.
"""

from __future__ import annotations

from mcp.client import ClientRequestContext
from mcp.types import ElicitRequestFormParams, ElicitRequestParams, ElicitResult, ErrorData

from mcp_clients.connection import BearerFlow, Connection
from mcp_clients.elicitation import with_defaults
from tests.interop.conftest import Peers


async def _no_token() -> str | None:
    return None


async def _nothing() -> None:
    return None


async def tool_names(connection: Connection) -> set[str]:
    try:
        client = await connection.open()
        return {t.name for t in (await client.list_tools(cache_mode="bypass")).tools}
    finally:
        await connection.close()


async def test_without_someone_to_answer_the_server_hides_its_questions(peers: Peers) -> None:
    names = await tool_names(Connection(peers.everything.url, BearerFlow(_no_token, _nothing), timeout=20))
    assert "echo" in names
    assert "trigger-elicitation-request" not in names


async def test_a_form_question_is_answered_with_the_forms_defaults(peers: Peers) -> None:
    asked: list[ElicitRequestParams] = []

    async def answer(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        asked.append(params)
        assert isinstance(params, ElicitRequestFormParams)
        return ElicitResult(action="accept", content=with_defaults(params.requested_schema, {}))

    connection = Connection(
        peers.everything.url, BearerFlow(_no_token, _nothing), timeout=20, elicitation=answer
    )
    try:
        client = await connection.open()
        names = {t.name for t in (await client.list_tools(cache_mode="bypass")).tools}
        assert "trigger-elicitation-request" in names
        result = await client.call_tool("trigger-elicitation-request", {}, read_timeout_seconds=20)
    finally:
        await connection.close()
    assert len(asked) == 1
    text = "\n".join(getattr(block, "text", "") for block in result.content)
    assert not result.is_error, text
    assert '"action": "accept"' in text
    assert '"firstLine": "It was a dark and stormy night."' in text  # a string default
    assert '"integer": 42' in text  # an integer default
    assert '"untitledMultipleSelectEnum": [\n      "Guitar"\n    ]' in text  # a multi-select default
