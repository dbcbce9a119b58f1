-- complete.lua: finish claimed items with their results and post their outputs.
-- KEYS: the fixed board keys (lib.lua) + ready/delayed/leased/wake of each completed item's kind,
--   each output's kind and each waiting dependant's kind.
--   writes state, results, status, counts, events, the kind's leased set; outputs as post.lua;
--   opens dependants whose last dependency this was (waiting, deps, ready/delayed, wake).
-- ARGS: {done = [{id, token, result, outputs = [post spec...], usage = [model call...]?}]};
--   output ids are derived from the parent id and index by the client, so a repeated completion never posts twice.
-- Returns {ok = [per claim: {ok = [[id, status, existed]...]} | {ok = 'already'} | {err...}]}.
-- A claim whose token is not current (lease expired and re-claimed, cancelled) writes nothing.
local kinds = item_kinds(ARGS.done)
for _, c in ipairs(ARGS.done) do
  post_kinds(c.outputs, kinds)
  dependant_kinds(c.id, kinds)
end
local need = missing_kinds(kinds)
if need then return reply({needkinds = need}) end

local out = {}
for i, c in ipairs(ARGS.done) do
  local st = get_state(c.id)
  if holds(st, c) then
    local bad = check_posts(c.outputs)
    if bad then
      out[i] = bad
    else
      local kind = redis.call('HGET', K_KIND, c.id)
      redis.call('ZREM', KK[kind].leased, c.id)
      set_status(c.id, kind, st, 'done')
      st.last_token, st.last_op = c.token, 'complete'
      clear_lease(st)
      st.finished_at = NOW
      redis.call('HSET', K_RESULTS, c.id, c.result)
      add_usage(c.id, st.root, c.usage)
      put_state(c.id, st)
      emit('done', c.id, kind, st, nil, c.result)
      local posted = {}
      for j, p in ipairs(c.outputs) do posted[j] = post_one(p) end
      satisfy_dependants(c.id)
      out[i] = {ok = posted}
    end
  elseif st and st.last_token == c.token and st.last_op == 'complete' then
    out[i] = {ok = 'already'}
  else
    out[i] = stale_reason(st, c)
  end
end
return reply({ok = out})
