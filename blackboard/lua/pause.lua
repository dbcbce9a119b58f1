-- pause.lua: stop new claims for a goal or the whole board, or undo it. In-flight work finishes.
-- KEYS: the fixed board keys (lib.lua) + ready/delayed/leased/wake of each kind it touches
--   (a goal's items' kinds; every kind for the board, to wake claimers on resume).
--   writes paused (goals) or meta.paused (board), the items' state, status, counts, waiting,
--   ready/delayed, events.
-- ARGS: {goal = id or absent (the board), pause = true | false}
-- Returns {ok = items held or reopened} | {err = 'not_found'} | {needkinds = [...]}.
-- While a goal is paused, make_ready and promote_due hold its items that would become
-- claimable: they wait, reason 'paused'. Resuming reopens exactly those.
if not ARGS.goal then
  local need = missing_kinds(redis.call('SMEMBERS', K_KINDS))
  if need then return reply({needkinds = need}) end
  if ARGS.pause then
    redis.call('HSET', K_META, 'paused', NOW)
  else
    redis.call('HDEL', K_META, 'paused')
    for _, k in ipairs(CTX.kinds) do wake(KK[k]) end
  end
  audit(ARGS.pause and 'board_paused' or 'board_resumed', '', '', '', nil, ARGS.note)
  return reply({ok = 0})
end

local goal = get_state(ARGS.goal)
if not goal then return reply({err = 'not_found'}) end
local ids = {}
for _, entry in ipairs(redis.call('ZRANGEBYLEX', K_LINEAGE, '[' .. ARGS.goal .. '|', '[' .. ARGS.goal .. '|\255')) do
  ids[#ids + 1] = string.sub(entry, #ARGS.goal + 2)
end
local need = missing_kinds(item_kinds(ids))
if need then return reply({needkinds = need}) end

local n = 0
if ARGS.pause then
  redis.call('HSET', K_PAUSED, ARGS.goal, NOW)
  for _, id in ipairs(ids) do
    local st = get_state(id)
    if st.status == 'open' or st.status == 'failed' then
      local kind = redis.call('HGET', K_KIND, id)
      unindex(id, kind, st)
      hold(id, kind, st)
      put_state(id, st)
      n = n + 1
    end
  end
else
  redis.call('HDEL', K_PAUSED, ARGS.goal)
  for _, id in ipairs(ids) do
    local st = get_state(id)
    if st.status == 'waiting' and st.reason == 'paused' then
      local kind = redis.call('HGET', K_KIND, id)
      redis.call('ZREM', K_WAITING, id)
      st.reason = nil
      make_ready(id, kind, st)
      put_state(id, st)
      n = n + 1
    end
  end
end
goal = get_state(ARGS.goal)
emit(ARGS.pause and 'paused' or 'resumed', ARGS.goal, redis.call('HGET', K_KIND, ARGS.goal), goal,
     {reason = ARGS.note})
return reply({ok = n})
