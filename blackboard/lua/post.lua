-- post.lua: write a batch of new items with their indexes, idempotently.
-- KEYS: the fixed board keys (lib.lua) + ready/delayed/leased/wake of each posted kind.
--   writes kind, items, state, status, counts, waiting, deps, children, lineage, idem, kinds,
--   events; ready or delayed + wake of the item's kind.
-- ARGS: {items = [{id, kind, doc, priority, max_attempts, parent?, after?, delay?, not_before?,
--   idem?}]}, ordered so that a parent or dependency inside the batch comes first.
-- Returns {ok = [[id, status, existed], ...]} | {err = code, index, id} | {needkinds = [...]}.
-- An existing id or idempotency key returns the existing item and writes nothing for it.
local need = missing_kinds(post_kinds(ARGS.items))
if need then return reply({needkinds = need}) end
local bad = check_posts(ARGS.items)
if bad then return reply(bad) end
local out = {}
for i, p in ipairs(ARGS.items) do out[i] = post_one(p) end
return reply({ok = out})
