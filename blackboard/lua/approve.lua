-- approve.lua: decide items waiting for approval: approve (they go on to wait for their
-- dependencies, or open), reject (dead-lettered with the note), escalate (a due timeout whose
-- rule says so: it waits on, and an event says it waited too long).
-- KEYS: the fixed board keys (lib.lua) + ready/delayed/leased/wake of each decided item's kind.
--   writes state, status, counts, approvals, waiting, events, waits (how long each decided one
--   waited, capped at WAITS_CAP); ready + wake when one opens.
-- ARGS: {decisions = [{id, verdict = 'approve' | 'reject' | 'timeout', note}]}; 'timeout' is
--   the reaper's: taken only if the item's approval deadline has passed, as its rule says
--   (st.on_timeout: 'reject' or 'escalate').
-- Returns {ok = [per decision: {ok = status} | {err = 'not_found' | 'not_pending' | 'not_due'}]}.
-- A decision on an item no longer waiting for approval (decided already) writes nothing.
local need = missing_kinds(item_kinds(ARGS.decisions))
if need then return reply({needkinds = need}) end

local NEVER = 9007199254740991 -- 2^53 - 1: waits with no deadline
local WAITS_CAP = 10000 -- waits no daemon has popped yet (none running): the newest are kept
local out = {}
for i, d in ipairs(ARGS.decisions) do
  local st = get_state(d.id)
  local deadline = redis.call('ZSCORE', K_APPROVALS, d.id)
  local verdict = d.verdict
  if verdict == 'timeout' and st then verdict = st.on_timeout or 'reject' end
  if verdict ~= 'approve' and verdict ~= 'reject' and verdict ~= 'escalate' then
    out[i] = {err = 'bad_verdict'}
  elseif not st then
    out[i] = {err = 'not_found'}
  elseif st.status ~= 'waiting' or not deadline then
    out[i] = {err = 'not_pending', status = st.status}
  elseif d.verdict == 'timeout' and tonumber(deadline) > NOW then
    out[i] = {err = 'not_due'}
  else
    local kind = redis.call('HGET', K_KIND, d.id)
    local note = d.note or ''
    if verdict == 'escalate' then
      redis.call('ZADD', K_APPROVALS, NEVER, d.id)
      st.escalated_at = NOW
      put_state(d.id, st)
      emit('escalated', d.id, kind, st, {reason = note})
    else
      redis.call('ZREM', K_APPROVALS, d.id)
      st.approval = {verdict = verdict, by = CTX.actor, at = NOW, note = note}
      redis.call('RPUSH', K_WAITS, verdict .. ':' .. (NOW - st.created_at))
      redis.call('LTRIM', K_WAITS, -WAITS_CAP, -1)
      if verdict == 'reject' then
        emit('rejected', d.id, kind, st, {reason = note})
        kill(d.id, kind, st, 'rejected: ' .. note)
      else
        st.pending = st.pending - 1
        if st.pending <= 0 then
          redis.call('ZREM', K_WAITING, d.id)
          st.reason = nil
          make_ready(d.id, kind, st)
        else
          st.reason = 'dependencies'
        end
        put_state(d.id, st)
        emit('approved', d.id, kind, st, {reason = note})
      end
    end
    out[i] = {ok = st.status}
  end
end
return reply({ok = out})
