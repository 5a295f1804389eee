"""How an approval is kept in Redis: one hash per approval; strings as they are, numbers as Python reprs,
lists as JSON text. Kept apart from the store's operations (approvals/store.py) so each stays readable."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any, cast, get_args

from redis.typing import EncodableT, FieldT
from redis.utils import str_if_bytes

from approvals.approval import Approval, ApprovalStatus, CardRef, Vote, VoteKind, VoteResult, canonical_json

__all__ = [
    "attempts_key",
    "decode",
    "encode",
    "flag",
    "ids",
    "pairs",
    "record_key",
    "vote_result",
]

_KINDS = frozenset(get_args(VoteKind))


_FLOATS = ("created_at", "expires_at")
_OPTIONAL_FLOATS = ("decided_at", "started_at", "lease_until", "finished_at")
_LISTS = ("approver_groups", "approvals", "decided_by", "cards")


def record_key(approval_id: str) -> str:
    return f"chatops:approval:{approval_id}"


def attempts_key(approval_id: str) -> str:
    return f"chatops:approval:{approval_id}:attempts"


def flag(value: bool) -> str:
    return "1" if value else "0"


def ids(rows: Iterable[Any]) -> list[str]:
    return [str_if_bytes(row) for row in rows]


def pairs(flat: Sequence[Any]) -> dict[Any, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def encode(approval: Approval) -> dict[FieldT, EncodableT]:
    out: dict[FieldT, EncodableT] = {}
    for name, value in vars(approval).items():
        if name == "arguments":
            out[name] = canonical_json(value)
        elif name in _LISTS:
            out[name] = json.dumps([vars(v) if is_dataclass(v) else v for v in value], ensure_ascii=False)
        elif value is None:
            out[name] = ""
        else:
            out[name] = repr(value) if isinstance(value, float) else str(value)
    return out


def _json_list(raw: str) -> list[Any]:
    # cjson writes an empty Lua table as {}; here that can only mean "none yet".
    value = json.loads(raw) if raw else []
    return value if isinstance(value, list) else []


def decode(raw: Mapping[Any, Any]) -> Approval:
    stored = {str_if_bytes(k): str_if_bytes(v) for k, v in raw.items()}
    # A field added in a later version is missing from older records: its default (always "") stands in.
    values: dict[str, Any] = {f.name: stored.get(f.name, "") for f in fields(Approval)}
    lists = {name: _json_list(values[name]) for name in _LISTS}
    values.update(
        {name: float(values[name]) for name in _FLOATS},
        **{name: float(values[name]) if values[name] else None for name in _OPTIONAL_FLOATS},
        arguments=json.loads(values["arguments"]),
        quorum=int(values["quorum"]),
        identity=values["identity"] or "user",
        status=ApprovalStatus(values["status"]),
        approver_groups=tuple(lists["approver_groups"]),
        decided_by=tuple(lists["decided_by"]),
        approvals=tuple(Vote(v["user"], v["sub"], v["email"], float(v["at"])) for v in lists["approvals"]),
        cards=tuple(CardRef(c["channel"], c["ts"]) for c in lists["cards"]),
    )
    return Approval(**values)


def vote_result(reply: list[Any]) -> VoteResult:
    kind = str_if_bytes(reply[0])
    if kind not in _KINDS:
        raise RuntimeError(f"unexpected reply from the vote script: {kind!r}")
    return VoteResult(cast(VoteKind, kind), decode(pairs(reply[2:])), int(reply[1]))
