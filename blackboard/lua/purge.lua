-- purge.lua: retention: delete finished goals, each whole tree at once, with its audit record.
-- A goal is purged only if every item of its tree is done, dead or cancelled and finished
-- at or before ARGS.before (ms); otherwise nothing of it is touched.
-- KEYS: the fixed board keys (lib.lua); no per-kind keys (a finished item is in no kind set).
-- ARGS: {roots = [goal id], before = ms, max_items = largest tree purged in one call}
-- Deletes each item's kind/items/state/results/usage fields; its status, lineage, children
-- and deps index entries and its count; its idempotency key (so the key can be used again);
-- leftover waiting/approvals entries. Of the goal: its totals, budget, paused flag and its
-- repeat-guard fields. Writes one 'purged' event and audit record per goal (audit records are
-- never deleted here: the exporter moves them to files).
-- Returns {ok = [{id, n} | {id, err = 'not_found' | 'not_a_goal' | 'unfinished' | 'recent' |
--   'too_big'}]}.
local out = {}
for i, root in ipairs(ARGS.roots) do
  local rst = get_state(root)
  local members, why = {}, nil
  if not rst then
    why = 'not_found'
  elseif rst.root ~= root then
    why = 'not_a_goal'
  else
    for _, m in ipairs(redis.call('ZRANGEBYLEX', K_LINEAGE, '[' .. root .. '|', '[' .. root .. '|\255')) do
      members[#members + 1] = string.sub(m, #root + 2)
    end
    if #members > ARGS.max_items then why = 'too_big' end
    for _, id in ipairs(why and {} or members) do
      local st = get_state(id)
      if not st or not TERMINAL[st.status] then why = 'unfinished'; break end
      if (st.finished_at or NOW) > ARGS.before then why = 'recent'; break end
    end
  end
  if why then
    out[i] = {id = root, err = why}
  else
    local root_kind = redis.call('HGET', K_KIND, root)
    for _, id in ipairs(members) do
      local st = get_state(id)
      local kind = redis.call('HGET', K_KIND, id)
      local doc = cjson.decode(redis.call('HGET', K_ITEMS, id) or '{}')
      if doc.idempotency_key and redis.call('HGET', K_IDEM, doc.idempotency_key) == id then
        redis.call('HDEL', K_IDEM, doc.idempotency_key)
      end
      for _, d in ipairs(type(doc.after) == 'table' and doc.after or {}) do
        redis.call('ZREM', K_DEPS, d .. '|' .. id)
      end
      redis.call('ZREMRANGEBYLEX', K_DEPS, '[' .. id .. '|', '[' .. id .. '|\255')
      redis.call('ZREM', K_STATUS, st.status .. '|' .. kind .. '|' .. id)
      redis.call('HINCRBY', K_COUNTS, kind .. '|' .. st.status, -1)
      redis.call('ZREM', K_LINEAGE, root .. '|' .. id)
      if st.parent then redis.call('ZREM', K_CHILDREN, st.parent .. '|' .. id) end
      redis.call('ZREM', K_WAITING, id)
      redis.call('ZREM', K_APPROVALS, id)
      for _, key in ipairs({K_KIND, K_ITEMS, K_STATE, K_RESULTS, K_USAGE}) do redis.call('HDEL', key, id) end
    end
    for _, key in ipairs({K_TOTALS, K_BUDGETS, K_PAUSED}) do redis.call('HDEL', key, root) end
    local cursor = '0'
    repeat
      local page = redis.call('HSCAN', K_REPEATS, cursor, 'MATCH', root .. '|*', 'COUNT', 500)
      cursor = page[1]
      for j = 1, #page[2], 2 do redis.call('HDEL', K_REPEATS, page[2][j]) end
    until cursor == '0'
    emit('purged', root, root_kind, rst, {count = #members})
    out[i] = {id = root, n = #members}
  end
end
return reply({ok = out})
