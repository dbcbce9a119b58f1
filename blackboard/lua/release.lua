-- release.lua: give claimed items back untouched (graceful shutdown); the attempt is not counted.
-- KEYS: the fixed board keys (lib.lua) + ready/delayed/leased/wake of each released item's kind.
--   writes state, status, counts, events, the kind's leased and ready sets, wake.
-- ARGS: {released = [{id, token}]}
-- Returns {ok = [per claim: {ok = 'open'} | {err...}]}.
local need = missing_kinds(item_kinds(ARGS.released))
if need then return reply({needkinds = need}) end

local out = {}
for i, c in ipairs(ARGS.released) do
  local st = get_state(c.id)
  if holds(st, c) then
    local kind = redis.call('HGET', K_KIND, c.id)
    redis.call('ZREM', KK[kind].leased, c.id)
    clear_lease(st)
    st.attempts = st.attempts - 1
    make_ready(c.id, kind, st)
    put_state(c.id, st)
    emit('released', c.id, kind, st)
    out[i] = {ok = 'open'}
  else
    out[i] = stale_reason(st, c)
  end
end
return reply({ok = out})
