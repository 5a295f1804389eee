"""The Lua texts of approvals.store's transitions, one per state change, each prefixed with `_LIB`.

`_GUARD` is the shared refusal check that `_VOTE` and `_REJECT` continue from; the comment above each
script gives its KEYS and ARGV as `ApprovalStore` passes them.
"""

# ----- Lua ------------------------------------------------------------------------------------------------
# Every script ends by returning {kind, count, HGETALL...}: the caller sees the record exactly as the
# transition left it, not as a later read might. Floats arrive as Python reprs and are stored verbatim
# (cjson would round them to 14 digits); JSON lists are appended to as text for the same reason.

_LIB = """
local rec, attempts = KEYS[1], KEYS[2]
local function reply(kind, count) return {kind, count, unpack(redis.call('HGETALL', rec))} end
local function note(user, sub, action, result, now)
  redis.call('RPUSH', attempts, '{"user":' .. cjson.encode(user) .. ',"sub":' .. cjson.encode(sub)
    .. ',"action":' .. cjson.encode(action) .. ',"result":"' .. result .. '","at":' .. now .. '}')
  local ttl = redis.call('TTL', rec)
  if ttl > 0 then redis.call('EXPIRE', attempts, ttl) end
  return result
end
local function append(field, item)
  local raw = redis.call('HGET', rec, field)
  if raw == '[]' then raw = '[' .. item .. ']' else raw = string.sub(raw, 1, -2) .. ',' .. item .. ']' end
  redis.call('HSET', rec, field, raw)
end
"""

# KEYS: record, attempts, pending (, approved for votes). ARGV: id, user, sub, eligible, now, action.
# The refusal order is the contract of `vote`/`reject`: closed, expired, own request, not eligible.
# A person is their sub (SPEC §5): any Slack account linked to the requester's sub is the requester, and the
# Slack account that asked stays the requester whatever it is linked to now. No sub, no decision.
_GUARD = """
local id, user, sub, eligible, now, action = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local status = redis.call('HGET', rec, 'status')
if not status then return {'missing', 0} end
local votes = cjson.decode(redis.call('HGET', rec, 'approvals'))
if status ~= 'PENDING' then return reply(note(user, sub, action, 'already_decided', now), #votes) end
if tonumber(now) >= tonumber(redis.call('HGET', rec, 'expires_at')) then
  redis.call('HSET', rec, 'status', 'EXPIRED', 'decided_at', now)
  redis.call('ZREM', KEYS[3], id)
  return reply(note(user, sub, action, 'expired', now), #votes)
end
if sub == redis.call('HGET', rec, 'requester_sub') or user == redis.call('HGET', rec, 'requester') then
  return reply(note(user, sub, action, 'own_request', now), #votes)
end
if eligible ~= '1' or sub == '' then return reply(note(user, sub, action, 'not_eligible', now), #votes) end
"""

# ARGV[7]: this vote as JSON. One vote per person (sub), and per Slack account (one relinked since it voted).
_VOTE = """
for _, v in ipairs(votes) do
  if v.sub == sub or v.user == user then return reply(note(user, sub, action, 'duplicate', now), #votes) end
end
append('approvals', ARGV[7])
local count = #votes + 1
if count < tonumber(redis.call('HGET', rec, 'quorum')) then
  return reply(note(user, sub, action, 'counted', now), count)
end
local voters = {}
for _, v in ipairs(votes) do table.insert(voters, v.user) end
table.insert(voters, user)
redis.call('HSET', rec, 'status', 'APPROVED', 'decided_by', cjson.encode(voters), 'decided_at', now)
redis.call('ZREM', KEYS[3], id)
redis.call('ZADD', KEYS[4], now, id)
return reply(note(user, sub, action, 'approved', now), count)
"""

# ARGV[7]: the reason, ARGV[8]: decided_by as JSON.
_REJECT = """
redis.call('HSET', rec, 'status', 'REJECTED', 'decided_by', ARGV[8], 'decided_at', now,
  'reject_reason', ARGV[7])
redis.call('ZREM', KEYS[3], id)
return reply(note(user, sub, action, 'rejected', now), #votes)
"""

# KEYS: record, attempts, pending. ARGV: id, user, sub, now, decided_by as JSON.
# Only the requester (the Slack account that asked, or any account linked to the requester's sub) may take a
# request back, and only while nobody has decided: a decision already reached is never undone.
_WITHDRAW = """
local id, user, sub, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local status = redis.call('HGET', rec, 'status')
if not status then return {'missing', 0} end
local votes = cjson.decode(redis.call('HGET', rec, 'approvals'))
if status ~= 'PENDING' then return reply(note(user, sub, 'withdraw', 'already_decided', now), #votes) end
if tonumber(now) >= tonumber(redis.call('HGET', rec, 'expires_at')) then
  redis.call('HSET', rec, 'status', 'EXPIRED', 'decided_at', now)
  redis.call('ZREM', KEYS[3], id)
  return reply(note(user, sub, 'withdraw', 'expired', now), #votes)
end
local own_sub = sub ~= '' and sub == redis.call('HGET', rec, 'requester_sub')
if user ~= redis.call('HGET', rec, 'requester') and not own_sub then
  return reply(note(user, sub, 'withdraw', 'not_requester', now), #votes)
end
redis.call('HSET', rec, 'status', 'WITHDRAWN', 'decided_by', ARGV[5], 'decided_at', now)
redis.call('ZREM', KEYS[3], id)
return reply(note(user, sub, 'withdraw', 'withdrawn', now), #votes)
"""

# KEYS: record, attempts (unused), pending. ARGV: id, now.
_EXPIRE = """
local status = redis.call('HGET', rec, 'status')
if status ~= 'PENDING' then redis.call('ZREM', KEYS[3], ARGV[1]) return {'no', 0} end
if tonumber(ARGV[2]) < tonumber(redis.call('HGET', rec, 'expires_at')) then return {'no', 0} end
redis.call('HSET', rec, 'status', 'EXPIRED', 'decided_at', ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return reply('yes', 0)
"""

# KEYS: record, attempts (unused), running, approved. ARGV: id, now, lease_until.
_START = """
redis.call('ZREM', KEYS[4], ARGV[1])
if redis.call('HGET', rec, 'status') ~= 'APPROVED' then return {'no', 0} end
redis.call('HSET', rec, 'status', 'RUNNING', 'started_at', ARGV[2], 'lease_until', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return reply('yes', 0)
"""

# KEYS: record, attempts (unused), running. ARGV: id, status, detail, now, only_after_lease ("1"/"0"),
# source of the detail ("server": what the server answered, or may have; "bot": the bot's own reason).
# mark_unknown passes "1": a worker that is merely slow but still holds its lease keeps its outcome.
_FINISH = """
if redis.call('HGET', rec, 'status') ~= 'RUNNING' then return {'no', 0} end
if ARGV[5] == '1' and tonumber(ARGV[4]) < tonumber(redis.call('HGET', rec, 'lease_until')) then
  return {'no', 0}
end
redis.call('HSET', rec, 'status', ARGV[2], 'finished_at', ARGV[4], 'outcome_detail', ARGV[3],
  'outcome_source', ARGV[6])
redis.call('ZREM', KEYS[3], ARGV[1])
return reply('yes', 0)
"""

# KEYS: record, attempts (unused). ARGV: id, channel, ts, card JSON. A retried post is recorded once.
_ADD_CARD = """
if redis.call('EXISTS', rec) == 0 then return {'no', 0} end
for _, c in ipairs(cjson.decode(redis.call('HGET', rec, 'cards'))) do
  if c.channel == ARGV[2] and c.ts == ARGV[3] then return {'yes', 0} end
end
append('cards', ARGV[4])
return {'yes', 0}
"""
