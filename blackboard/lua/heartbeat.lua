-- heartbeat.lua: extend the leases the caller still holds.
-- KEYS: the fixed board keys (lib.lua) + ready/delayed/leased/wake of each held item's kind.
--   writes state and the kind's leased set.
-- ARGS: {lease_ms, held = [{id, token}]}
-- Returns {ok = [new deadline ms, or {err = 'stale'|'not_found', ...}] per held claim}.
local need = missing_kinds(item_kinds(ARGS.held))
if need then return reply({needkinds = need}) end

local out = {}
for i, c in ipairs(ARGS.held) do
  local st = get_state(c.id)
  if holds(st, c) then
    local kind = redis.call('HGET', K_KIND, c.id)
    st.deadline = NOW + ARGS.lease_ms
    redis.call('ZADD', KK[kind].leased, 'XX', st.deadline, c.id)
    put_state(c.id, st)
    out[i] = st.deadline
  else
    out[i] = stale_reason(st, c)
  end
end
return reply({ok = out})
