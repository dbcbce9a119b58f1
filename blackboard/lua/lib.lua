-- lib.lua: helpers prepended to every operation script (see blackboard/scripts.py).
--
-- KEYS: the board's fixed keys, in this order, then four keys per kind named in CTX.kinds.
--   KEYS[1]  meta      hash    board counters (fencing token)
--   KEYS[2]  kind      hash    id -> kind
--   KEYS[3]  items     hash    id -> immutable JSON (payload, priority, after, ...)
--   KEYS[4]  state     hash    id -> mutable JSON (status, attempts, lease, root, ...)
--   KEYS[5]  results   hash    id -> result JSON of a done item
--   KEYS[6]  status    zset    lex index "status|kind|id" (every item, exactly once)
--   KEYS[7]  waiting   zset    id -> created ms, items waiting for dependencies
--   KEYS[8]  deps      zset    lex index "dependency|dependant" for unmet dependencies
--   KEYS[9]  children  zset    lex index "parent|child"
--   KEYS[10] lineage   zset    lex index "root|id"
--   KEYS[11] counts    hash    "kind|status" -> number of items
--   KEYS[12] idem      hash    idempotency key -> id
--   KEYS[13] events    stream  state changes, capped
--   KEYS[14] kinds     set     every kind ever posted
--   KEYS[15] guards    hash    guarded kind -> review kind (a critic reviews its items first)
--   KEYS[16] usage     hash    id -> JSON list of model calls made for the item (all attempts)
--   KEYS[17] totals    hash    root -> JSON usage totals of the goal (calls, tokens, cost, by model)
--   KEYS[18] audit     stream  one hash-chained record per state change (blackboard/audit.py);
--                              trimmed only by the exporter, once the records are on disk
--   KEYS[19] budgets   hash    goal id -> JSON budget: its limits and counters (blackboard/policy.py)
--   KEYS[20] repeats   hash    "goal|digest of kind and payload" -> id, for the repeat guard
--   KEYS[21] approvals zset    id -> approval deadline ms (2^53 - 1: none), items waiting for one
--   KEYS[22] paused    hash    goal id -> ms it was paused (blackboard/pausing.py)
--   KEYS[23] waits     list    "verdict:ms" per decided approval, how long it waited (capped);
--                              daemons pop them into their approval wait-time histogram
--   then per kind k: ready zset (claim order), delayed zset (due ms), leased zset (deadline ms),
--   wake list (a token that blocked claimers BLPOP on).
-- ARGV[1]: JSON context {now = ms or absent (then Redis TIME), kinds = [...], maxlen = n, actor = s,
--   daemon = id of the daemon making the call, policy = version of the policy in force,
--   shard = the number of the shard these keys belong to, on a board of several}
-- ARGV[2]: JSON arguments of the operation.
-- Every script returns one JSON string: {ok = ...} or {err = code, ...} or {needkinds = [...]}.
-- No key name is built here: per-kind keys arrive through KEYS; a script that finds it needs a
-- kind it was not given returns {needkinds} before writing anything and the client calls again.

local K_META, K_KIND, K_ITEMS, K_STATE, K_RESULTS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_STATUS, K_WAITING, K_DEPS, K_CHILDREN, K_LINEAGE = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local K_COUNTS, K_IDEM, K_EVENTS, K_KINDS = KEYS[11], KEYS[12], KEYS[13], KEYS[14]
local K_GUARDS, K_USAGE, K_TOTALS, K_AUDIT = KEYS[15], KEYS[16], KEYS[17], KEYS[18]
local K_BUDGETS, K_REPEATS, K_APPROVALS, K_PAUSED = KEYS[19], KEYS[20], KEYS[21], KEYS[22]
local K_WAITS = KEYS[23]
local NFIXED = 23

local CTX = cjson.decode(ARGV[1])
local ARGS = cjson.decode(ARGV[2])

local NOW = CTX.now
if not NOW then
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local KK = {}
for i, k in ipairs(CTX.kinds) do
  local b = NFIXED + (i - 1) * 4
  KK[k] = {ready = KEYS[b + 1], delayed = KEYS[b + 2], leased = KEYS[b + 3], wake = KEYS[b + 4]}
end

local TERMINAL = {done = true, dead = true, cancelled = true}
local MARK_SCALE = 8589934592 -- 2^33: priority dominates, the mark orders within a priority

-- Kinds of `list` with no keys in this call (nil when all are present).
local function missing_kinds(list)
  local seen, out = {}, {}
  for _, k in ipairs(list) do
    if not KK[k] and not seen[k] then seen[k] = true; out[#out + 1] = k end
  end
  if #out == 0 then return nil end
  return out
end

-- The audit record of one state change, appended in the same script as the change, so there is
-- no change without its record and no record without its change. Records form a hash chain:
-- hash = sha1(prev .. body), body = the fields below, each as <byte length>:<value>, so editing,
-- deleting, inserting or reordering a record breaks the chain at that record. SHA-1 because it
-- is the one hash Redis Lua has; the exporter chains the files on disk with SHA-256 on top.
-- `data` is what the change wrote (a post's document, a result, an error): only its SHA-1 is
-- kept here, the data stays on the item. `detail` is a short why (a cancellation's reason).
-- The chain's head (seq, hash) is in the meta hash, written once per script by flush_audit()
-- (reply() calls it; claim.lua, which returns an array, calls it itself).
local AUDIT_FIELDS = {'seq', 'at', 'op', 'id', 'kind', 'root', 'actor', 'daemon', 'policy', 'digest',
                      'detail'}
local audit_seq, audit_head, audit_dirty

local function audit(op, id, kind, root, data, detail)
  if not audit_seq then
    local h = redis.call('HMGET', K_META, 'audit_seq', 'audit_head')
    audit_seq, audit_head = tonumber(h[1]) or 0, h[2] or ''
  end
  audit_seq = audit_seq + 1
  local rec = {seq = tostring(audit_seq), at = tostring(NOW), op = op, id = id or '', kind = kind or '',
               root = root or '', actor = CTX.actor or '', daemon = CTX.daemon or '',
               policy = CTX.policy or '', digest = data and redis.sha1hex(data) or '',
               detail = detail or ''}
  local body, fields = {}, {}
  for i, f in ipairs(AUDIT_FIELDS) do
    body[i] = #rec[f] .. ':' .. rec[f]
    fields[#fields + 1] = f; fields[#fields + 1] = rec[f]
  end
  local hash = redis.sha1hex(audit_head .. table.concat(body))
  fields[#fields + 1] = 'prev'; fields[#fields + 1] = audit_head
  fields[#fields + 1] = 'hash'; fields[#fields + 1] = hash
  redis.call('XADD', K_AUDIT, '*', unpack(fields))
  audit_head, audit_dirty = hash, true
end

-- Write the chain's head. Every script that audits calls this before it returns (reply does).
local function flush_audit()
  if audit_dirty then
    redis.call('HSET', K_META, 'audit_seq', audit_seq, 'audit_head', audit_head)
    audit_dirty = false
  end
end

local function reply(t)
  flush_audit()
  return cjson.encode(t)
end

-- Kinds of the items named in `list` (ids, or tables with an `id`), appended to `out`.
local function item_kinds(list, out)
  out = out or {}
  for _, x in ipairs(list) do
    local k = redis.call('HGET', K_KIND, type(x) == 'table' and x.id or x)
    if k then out[#out + 1] = k end
  end
  return out
end

local function get_state(id)
  local raw = redis.call('HGET', K_STATE, id)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function put_state(id, st)
  st.updated_at = NOW
  redis.call('HSET', K_STATE, id, cjson.encode(st))
end

-- Move an item between statuses in the status index and the counters. Ordering indexes
-- (ready/delayed/leased/waiting) are the caller's business.
local function set_status(id, kind, st, new)
  local old = st.status
  if old then
    redis.call('ZREM', K_STATUS, old .. '|' .. kind .. '|' .. id)
    redis.call('HINCRBY', K_COUNTS, kind .. '|' .. old, -1)
  end
  st.status = new
  redis.call('ZADD', K_STATUS, 0, new .. '|' .. kind .. '|' .. id)
  redis.call('HINCRBY', K_COUNTS, kind .. '|' .. new, 1)
end

local function emit(etype, id, kind, st, extra, data)
  local fields = {'type', etype, 'id', id, 'kind', kind, 'status', st.status, 'root', st.root,
                  'ts', tostring(NOW)}
  if CTX.actor then fields[#fields + 1] = 'actor'; fields[#fields + 1] = CTX.actor end
  if extra then
    for k, v in pairs(extra) do fields[#fields + 1] = k; fields[#fields + 1] = tostring(v) end
  end
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', CTX.maxlen, '*', unpack(fields))
  audit(etype, id, kind, st.root, data, extra and extra.reason)
end

-- Claim order: lower score first. Priority dominates; a mark (log2 of strength plus time over
-- half-life, so decay never needs rescoring) orders within a priority; ties go by id.
local function score(st)
  return string.format('%.17g', -((st.priority or 0) * MARK_SCALE + (st.mark or 0)))
end

local function wake(kk)
  if redis.call('LLEN', kk.wake) == 0 then redis.call('RPUSH', kk.wake, '1') end
end

-- A paused goal's item that would become claimable waits instead, reason 'paused' (pause.lua
-- reopens exactly those when the goal is resumed).
local function hold(id, kind, st)
  set_status(id, kind, st, 'waiting')
  st.reason = 'paused'
  redis.call('ZADD', K_WAITING, NOW, id)
end

local function goal_paused(st) return redis.call('HEXISTS', K_PAUSED, st.root) == 1 end

-- Put an item where a claimer finds it: ready now, or delayed until not_before (or held, while
-- its goal is paused).
local function make_ready(id, kind, st, status)
  if goal_paused(st) then return hold(id, kind, st) end
  local kk = KK[kind]
  set_status(id, kind, st, status or 'open')
  if st.not_before and st.not_before > NOW then
    redis.call('ZADD', kk.delayed, st.not_before, id)
  else
    st.not_before, st.ready_at = nil, NOW
    redis.call('ZADD', kk.ready, score(st), id)
  end
  wake(kk)
end

local function clear_lease(st)
  st.token, st.owner, st.deadline = nil, nil, nil
end

-- Remove an item from whichever ordering index its status puts it in.
local function unindex(id, kind, st)
  local s = st.status
  if s == 'waiting' then
    redis.call('ZREM', K_WAITING, id)
  elseif s == 'claimed' then
    redis.call('ZREM', KK[kind].leased, id)
  elseif s == 'open' or s == 'failed' then
    redis.call('ZREM', KK[kind].ready, id)
    redis.call('ZREM', KK[kind].delayed, id)
  end
end

-- Dependants of `id` still waiting for it, as a list of ids.
local function dependants(id)
  local out = {}
  for _, m in ipairs(redis.call('ZRANGEBYLEX', K_DEPS, '[' .. id .. '|', '[' .. id .. '|\255')) do
    out[#out + 1] = string.sub(m, #id + 2)
  end
  return out
end

-- A dependency of these items will never be done: cancel them, and theirs, transitively.
local function cancel_dependants(id, why)
  local queue = {{id, why}}
  local n = 0
  while #queue > 0 do
    local cur, cur_why = unpack(table.remove(queue))
    for _, d in ipairs(dependants(cur)) do
      redis.call('ZREM', K_DEPS, cur .. '|' .. d)
      local dst = get_state(d)
      if dst and dst.status == 'waiting' then
        local dkind = redis.call('HGET', K_KIND, d)
        redis.call('ZREM', K_WAITING, d)
        set_status(d, dkind, dst, 'cancelled')
        dst.reason = 'dependency ' .. cur .. ' ' .. cur_why
        dst.finished_at = NOW
        put_state(d, dst)
        emit('cancelled', d, dkind, dst, {reason = dst.reason})
        queue[#queue + 1] = {d, 'cancelled'}
        n = n + 1
      end
    end
  end
  return n
end

-- Terminal failure: dead-letter the item and cancel what waits on it.
local function kill(id, kind, st, err)
  unindex(id, kind, st)
  set_status(id, kind, st, 'dead')
  clear_lease(st)
  if err then st.error = err end
  st.finished_at = NOW
  put_state(id, st)
  emit('dead', id, kind, st, nil, err)
  cancel_dependants(id, 'dead')
end

-- Return expired leases of one kind to open (the attempt was counted at claim) or to dead.
-- Returns how many.
local function expire_leases(kind, limit)
  local kk = KK[kind]
  local ids = redis.call('ZRANGEBYSCORE', kk.leased, '-inf', NOW, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    local st = get_state(id)
    if st.attempts >= st.max_attempts then
      kill(id, kind, st, 'lease expired after ' .. st.attempts .. ' attempts (last owner ' ..
        tostring(st.owner) .. ')')
    else
      redis.call('ZREM', kk.leased, id)
      st.error = 'lease expired (owner ' .. tostring(st.owner) .. ')'
      clear_lease(st)
      make_ready(id, kind, st)
      put_state(id, st)
      emit('expired', id, kind, st)
    end
  end
  return #ids
end

-- Move due delayed items of one kind (retries after backoff, delayed posts) to ready.
local function promote_due(kind, limit)
  local kk = KK[kind]
  local ids = redis.call('ZRANGEBYSCORE', kk.delayed, '-inf', NOW, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    redis.call('ZREM', kk.delayed, id)
    local st = get_state(id)
    st.not_before, st.ready_at = nil, NOW
    if goal_paused(st) then
      hold(id, kind, st)
    else
      set_status(id, kind, st, 'open')
      redis.call('ZADD', kk.ready, score(st), id)
    end
    put_state(id, st)
  end
  if #ids > 0 then wake(kk) end
  return #ids
end

-- Earliest time something of these kinds becomes claimable without a post (ms, or false).
local function next_due(kinds)
  local best = false
  for _, k in ipairs(kinds) do
    for _, key in ipairs({KK[k].delayed, KK[k].leased}) do
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if first[2] then
        local t = tonumber(first[2])
        if not best or t < best then best = t end
      end
    end
  end
  return best
end

-- Post checks: returns nil when every spec can be written, else an {err=...} reply.
-- Specs come ordered so that a spec's parent and dependencies precede it within the batch.
-- Goals' budgets and the repeat guard (blackboard/policy.py). A goal posted with a budget gets
-- a record {limits..., items, started, window, window_n}; posts under it are checked against it
-- before anything is written, and counted by post_one.
local budget_cache = {}
local function budget_of(root)
  local b = budget_cache[root]
  if b == nil then
    local raw = redis.call('HGET', K_BUDGETS, root)
    b = raw and cjson.decode(raw) or false
    budget_cache[root] = b
  end
  return b or nil
end

local function save_budget(root, b) redis.call('HSET', K_BUDGETS, root, cjson.encode(b)) end

-- The goal reached a limit: it stops growing. Marked on its state and budget record, with an
-- event and its audit record (the refused posts write nothing).
local function exhaust(root, reason)
  local b = budget_of(root)
  if b.exhausted then return end
  b.exhausted = reason
  save_budget(root, b)
  local st = get_state(root)
  st.budget = reason
  put_state(root, st)
  emit('budget_exceeded', root, redis.call('HGET', K_KIND, root), st, {reason = reason})
end

-- Which limit one more post under `root` would pass (nil: none). `n_root` counts this batch's
-- posts under the goal so far, this one included; `n_parent` the parent's children with it.
local function over_budget(b, root, depth, n_root, n_parent)
  if b.exhausted then return b.exhausted end
  if b.max_items and b.items + n_root > b.max_items then return 'max_items' end
  if b.max_depth and depth > b.max_depth then return 'max_depth' end
  if b.max_fanout and n_parent > b.max_fanout then return 'max_fanout' end
  if b.max_seconds and NOW - b.started > b.max_seconds * 1000 then return 'max_seconds' end
  if b.max_posts_per_minute then
    local n = (NOW - b.window < 60000) and b.window_n or 0
    if n + n_root > b.max_posts_per_minute then return 'max_posts_per_minute' end
  end
  if b.max_tokens or b.max_cost_usd then
    local raw = redis.call('HGET', K_TOTALS, root)
    local t = raw and cjson.decode(raw) or {}
    local used = (t.prompt_tokens or 0) + (t.completion_tokens or 0)
    if b.max_tokens and used >= b.max_tokens then return 'max_tokens' end
    if b.max_cost_usd and (t.cost or 0) >= b.max_cost_usd then return 'max_cost_usd' end
  end
  return nil
end

-- Check a batch of post specs before anything is written: parents and dependencies exist, no
-- goal's budget is passed, no kind and payload is repeated under a goal. Returns nil or an err.
local function check_posts(specs)
  local batch, per_root, kids, hashes = {}, {}, {}, {}
  for i, p in ipairs(specs) do
    if p.parent and not batch[p.parent] and redis.call('HEXISTS', K_KIND, p.parent) == 0 then
      return {err = 'unknown_parent', index = i - 1, id = p.parent}
    end
    for _, d in ipairs(p.after or {}) do
      if not batch[d] and redis.call('HEXISTS', K_KIND, d) == 0 then
        return {err = 'unknown_dependency', index = i - 1, id = d}
      end
    end
    local root, depth = p.id, 0
    if p.parent then
      local up = batch[p.parent] or get_state(p.parent)
      root, depth = up.root, up.depth + 1
    end
    batch[p.id] = {root = root, depth = depth}
    local b = p.parent and budget_of(root)
    local guarded = p.parent and (p.phash or b) and not (redis.call('HEXISTS', K_KIND, p.id) == 1
      or (p.idem and redis.call('HEXISTS', K_IDEM, p.idem) == 1))
    if guarded then -- a new item under a goal with guards (a re-post of an existing one is not)
      if p.phash then
        local key = root .. '|' .. p.phash
        if hashes[key] or redis.call('HEXISTS', K_REPEATS, key) == 1 then
          return {err = 'repeat', index = i - 1, id = p.id, root = root, kind = p.kind}
        end
        hashes[key] = true
      end
      if b then
        per_root[root] = (per_root[root] or 0) + 1
        kids[p.parent] = (kids[p.parent]
          or redis.call('ZLEXCOUNT', K_CHILDREN, '[' .. p.parent .. '|', '[' .. p.parent .. '|\255')) + 1
        local why = over_budget(b, root, depth, per_root[root], kids[p.parent])
        if why then
          exhaust(root, why)
          return {err = 'budget', index = i - 1, id = p.id, root = root, reason = why}
        end
      end
    end
  end
  return nil
end

-- Write one checked spec. Returns {id, status, existed}.
local function post_one(p)
  if p.idem then
    local prev = redis.call('HGET', K_IDEM, p.idem)
    if prev then return {prev, get_state(prev).status, true} end
  end
  local prev = get_state(p.id)
  if prev then return {p.id, prev.status, true} end

  local st = {attempts = 0, max_attempts = p.max_attempts, priority = p.priority,
              created_at = NOW, not_before = p.not_before, root = p.id, depth = 0}
  if p.delay then st.not_before = NOW + p.delay end
  if p.parent then
    local pst = get_state(p.parent)
    st.parent, st.root, st.depth = p.parent, pst.root, pst.depth + 1
    redis.call('ZADD', K_CHILDREN, 0, p.parent .. '|' .. p.id)
  end
  redis.call('HSET', K_KIND, p.id, p.kind)
  redis.call('HSET', K_ITEMS, p.id, p.doc)
  redis.call('ZADD', K_LINEAGE, 0, st.root .. '|' .. p.id)
  redis.call('SADD', K_KINDS, p.kind)
  if p.idem then redis.call('HSET', K_IDEM, p.idem, p.id) end

  local pending, dead_dep = 0, nil
  for _, d in ipairs(p.after or {}) do
    local dst = get_state(d)
    if dst.status == 'dead' or dst.status == 'cancelled' then
      dead_dep = 'dependency ' .. d .. ' ' .. dst.status
    elseif dst.status ~= 'done' then
      pending = pending + 1
      redis.call('ZADD', K_DEPS, 0, d .. '|' .. p.id)
    end
  end
  local review_kind = not p.reviewed and not dead_dep and redis.call('HGET', K_GUARDS, p.kind)
  local review_id = p.id .. ':review'
  if review_kind then -- a critic reviews it first: it waits on its own review item
    pending = pending + 1
    redis.call('ZADD', K_DEPS, 0, review_id .. '|' .. p.id)
  end
  if p.approval and not dead_dep then -- a human approves it first (blackboard/approvals.py)
    pending = pending + 1
    local timeout = p.approval.timeout_ms
    redis.call('ZADD', K_APPROVALS, timeout and NOW + timeout or 9007199254740991, p.id)
    st.on_timeout = p.approval.on_timeout
  end
  st.pending = pending

  if dead_dep then
    set_status(p.id, p.kind, st, 'cancelled')
    st.reason, st.finished_at = dead_dep, NOW
  elseif pending > 0 then
    set_status(p.id, p.kind, st, 'waiting')
    st.reason = p.approval and 'approval' or 'dependencies'
    redis.call('ZADD', K_WAITING, NOW, p.id)
  else
    make_ready(p.id, p.kind, st)
  end
  put_state(p.id, st)
  emit('posted', p.id, p.kind, st, nil, p.doc)
  if p.budget and not p.parent then -- a goal with a budget: start its record
    local b = p.budget
    b.items, b.started, b.window, b.window_n = 1, NOW, NOW, 0
    budget_cache[p.id] = b
    save_budget(p.id, b)
  elseif p.parent then
    local b = budget_of(st.root)
    if b then
      b.items = b.items + 1
      if NOW - b.window >= 60000 then b.window, b.window_n = NOW, 0 end
      b.window_n = b.window_n + 1
      save_budget(st.root, b)
    end
    if p.phash then redis.call('HSET', K_REPEATS, st.root .. '|' .. p.phash, p.id) end
  end
  if review_kind then -- a sibling, so cancelling a rejected item leaves its review be
    post_one({id = review_id, kind = review_kind, parent = p.parent or p.id, reviewed = true,
              priority = p.priority, max_attempts = p.max_attempts,
              doc = cjson.encode({payload = {target = p.id, kind = p.kind}, created_by = 'guard'})})
  end
  return {p.id, st.status, false}
end

-- Kinds a post batch touches: the specs' own, and the review kinds of guarded ones.
local function post_kinds(specs, out)
  out = out or {}
  for _, p in ipairs(specs) do
    out[#out + 1] = p.kind
    local review_kind = redis.call('HGET', K_GUARDS, p.kind)
    if review_kind then out[#out + 1] = review_kind end
  end
  return out
end

-- Record model calls made for an item (any attempt) on it and in its goal's totals.
local function add_usage(id, root, calls)
  if not calls or #calls == 0 then return end
  local raw = redis.call('HGET', K_USAGE, id)
  local list = raw and cjson.decode(raw) or {}
  raw = redis.call('HGET', K_TOTALS, root)
  local t = raw and cjson.decode(raw) or {by_model = {}}
  local function add(into, c)
    into.calls = (into.calls or 0) + 1
    into.errors = (into.errors or 0) + (c.error and 1 or 0)
    into.prompt_tokens = (into.prompt_tokens or 0) + (c.prompt_tokens or 0)
    into.completion_tokens = (into.completion_tokens or 0) + (c.completion_tokens or 0)
    into.cost = (into.cost or 0) + (c.cost or 0)
    into.latency_ms = (into.latency_ms or 0) + (c.latency_ms or 0)
  end
  for _, c in ipairs(calls) do
    list[#list + 1] = c
    add(t, c)
    local m = t.by_model[c.model] or {}
    add(m, c)
    t.by_model[c.model] = m
  end
  redis.call('HSET', K_USAGE, id, cjson.encode(list))
  redis.call('HSET', K_TOTALS, root, cjson.encode(t))
end

-- A dependency of these items is done: count it off and open those with nothing left to wait for.
local function satisfy_dependants(id)
  for _, d in ipairs(dependants(id)) do
    redis.call('ZREM', K_DEPS, id .. '|' .. d)
    local dst = get_state(d)
    if dst and dst.status == 'waiting' then
      dst.pending = dst.pending - 1
      if dst.pending <= 0 and dst.reason == 'dependencies' then
        local dkind = redis.call('HGET', K_KIND, d)
        redis.call('ZREM', K_WAITING, d)
        dst.reason = nil
        make_ready(d, dkind, dst)
        emit('opened', d, dkind, dst)
      end
      put_state(d, dst)
    end
  end
end

-- Kinds of the items waiting on `id` (their keys are needed to open them).
local function dependant_kinds(id, out)
  for _, d in ipairs(dependants(id)) do out[#out + 1] = redis.call('HGET', K_KIND, d) end
  return out
end

-- The claim `c` ({id, token}) is current: the item is claimed under this very token.
local function holds(st, c)
  return st and st.status == 'claimed' and st.token == c.token
end

-- Why a claim is not current, for the caller's error message.
local function stale_reason(st, c)
  if not st then return {err = 'not_found', id = c.id} end
  return {err = 'stale', id = c.id, status = st.status, token = st.token}
end
