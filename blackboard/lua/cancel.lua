-- cancel.lua: cancel an item and every unfinished descendant; what waits on them is cancelled too.
-- KEYS: the fixed board keys (lib.lua) + ready/delayed/leased/wake of each kind in the subtree.
--   reads children; writes state, status, counts, events, waiting/deps and the kinds' sets.
--   A claimed item is cancelled as well: its token stops being current, so the worker's next
--   write (heartbeat, complete, fail) is rejected.
-- ARGS: {id, reason}
-- Returns {ok = number cancelled} | {err = 'not_found', id} | {needkinds = [...]}.
if redis.call('HEXISTS', K_KIND, ARGS.id) == 0 then
  return reply({err = 'not_found', id = ARGS.id})
end
local subtree, kinds = {ARGS.id}, {}
local i = 1
while i <= #subtree do
  local id = subtree[i]
  kinds[#kinds + 1] = redis.call('HGET', K_KIND, id)
  for _, m in ipairs(redis.call('ZRANGEBYLEX', K_CHILDREN, '[' .. id .. '|', '[' .. id .. '|\255')) do
    subtree[#subtree + 1] = string.sub(m, #id + 2)
  end
  i = i + 1
end
local need = missing_kinds(kinds)
if need then return reply({needkinds = need}) end

local n = 0
for j, id in ipairs(subtree) do
  local st = get_state(id)
  if not TERMINAL[st.status] then
    unindex(id, kinds[j], st)
    set_status(id, kinds[j], st, 'cancelled')
    clear_lease(st)
    st.reason = ARGS.reason
    st.finished_at = NOW
    put_state(id, st)
    emit('cancelled', id, kinds[j], st, {reason = ARGS.reason})
    n = n + 1 + cancel_dependants(id, 'cancelled')
  end
end
return reply({ok = n})
