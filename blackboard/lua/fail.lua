-- fail.lua: record a failed attempt: retry after a delay, or dead-letter.
-- KEYS: the fixed board keys (lib.lua) + ready/delayed/leased/wake of each failed item's kind.
--   writes state, status, counts, events, the kind's leased and delayed/ready sets; a dead item
--   cancels its waiting dependants (waiting, deps).
-- ARGS: {failed = [{id, token, error, delay = ms, dead = bool, usage = [model call...]?}]};
--   the client computes the backoff (with jitter); the script decides retry or dead from attempts and max_attempts.
-- Returns {ok = [per claim: {ok = status} | {ok = 'already'} | {err...}]}.
local need = missing_kinds(item_kinds(ARGS.failed))
if need then return reply({needkinds = need}) end

local out = {}
for i, c in ipairs(ARGS.failed) do
  local st = get_state(c.id)
  if holds(st, c) then
    local kind = redis.call('HGET', K_KIND, c.id)
    st.last_token, st.last_op = c.token, 'fail'
    add_usage(c.id, st.root, c.usage)
    if c.dead or st.attempts >= st.max_attempts then
      kill(c.id, kind, st, c.error)
    else
      redis.call('ZREM', KK[kind].leased, c.id)
      clear_lease(st)
      st.error = c.error
      st.not_before = NOW + c.delay
      make_ready(c.id, kind, st, c.delay > 0 and 'failed' or 'open')
      put_state(c.id, st)
      emit('failed', c.id, kind, st, {retry_at = st.not_before or NOW}, c.error)
    end
    out[i] = {ok = st.status}
  elseif st and st.last_token == c.token and st.last_op == 'fail' then
    out[i] = {ok = 'already'}
  else
    out[i] = stale_reason(st, c)
  end
end
return reply({ok = out})
