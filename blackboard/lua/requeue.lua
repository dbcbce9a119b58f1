-- requeue.lua: give dead-lettered items a fresh set of attempts.
-- KEYS: the fixed board keys (lib.lua) + ready/delayed/leased/wake of each item's kind.
--   writes state, status, counts, events, the kind's ready set and wake.
-- ARGS: {ids = [...]}
-- Returns {ok = [per id: {ok = 'open'} | {err = 'not_dead'|'not_found', id, status}]}.
local need = missing_kinds(item_kinds(ARGS.ids))
if need then return reply({needkinds = need}) end

local out = {}
for i, id in ipairs(ARGS.ids) do
  local st = get_state(id)
  if not st then
    out[i] = {err = 'not_found', id = id}
  elseif st.status ~= 'dead' then
    out[i] = {err = 'not_dead', id = id, status = st.status}
  else
    local kind = redis.call('HGET', K_KIND, id)
    st.attempts, st.finished_at, st.not_before = 0, nil, nil
    make_ready(id, kind, st)
    put_state(id, st)
    emit('requeued', id, kind, st)
    out[i] = {ok = 'open'}
  end
end
return reply({ok = out})
