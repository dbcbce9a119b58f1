-- claim.lua: lease up to n of the best claimable items across some kinds.
-- KEYS: the fixed board keys (lib.lua) + ready/delayed/leased/wake of each claimed kind,
--   then the request key (string): "id=token,..." of what this request claimed, kept 5 minutes.
--   Before choosing, returns this kind's expired leases and promotes its due delayed items, so
--   a crashed worker's item comes back as soon as anyone asks for work.
-- A repeated request (the reply was lost, e.g. Redis restarted, and the client sent it again)
-- answers with the items that request claimed and still holds, and claims nothing new: without
-- this, the first batch would sit leased to nobody until its lease ran out.
-- ARGS: {agent, n, lease_ms, kinds = [...]}
-- Returns a flat array (not JSON, to keep payloads unescaped):
--   {next_due ms or '', expired, id1, kind1, doc1, state1, id2, ...}  |  JSON {needkinds = [...]}
--   where `expired` is "kind=n,kind=n" for leases this call found expired ('' for none).
-- Each claim gets a fresh fencing token from the board's counter. A paused board (pause.lua)
-- claims nothing; a paused goal's items are not in the ready sets at all.
local kinds = ARGS.kinds
local need = missing_kinds(kinds)
if need then return reply({needkinds = need}) end
local K_REQUEST = KEYS[NFIXED + 4 * #CTX.kinds + 1]

local function claimed_item(out, id, kind)
  out[#out + 1] = id
  out[#out + 1] = kind
  out[#out + 1] = redis.call('HGET', K_ITEMS, id)
  out[#out + 1] = redis.call('HGET', K_STATE, id)
end

local previous = redis.call('GET', K_REQUEST)
if previous then
  local out = {'', ''}
  for id, token in string.gmatch(previous, '([^,=]+)=([^,]+)') do
    local st = get_state(id)
    if st and st.status == 'claimed' and st.token == token then
      claimed_item(out, id, redis.call('HGET', K_KIND, id))
    end
  end
  return out
end

local expired = {}
for _, k in ipairs(kinds) do
  local n = expire_leases(k, 100)
  if n > 0 then expired[#expired + 1] = k .. '=' .. n end
  promote_due(k, 1000)
end

local cands = {}
if redis.call('HEXISTS', K_META, 'paused') == 1 then kinds = {} end -- a paused board: no claims
for _, k in ipairs(kinds) do
  local r = redis.call('ZRANGE', KK[k].ready, 0, ARGS.n - 1, 'WITHSCORES')
  for i = 1, #r, 2 do cands[#cands + 1] = {r[i], tonumber(r[i + 1]), k} end
end
if #kinds > 1 then
  table.sort(cands, function(a, b)
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[1] < b[1]
  end)
end

local out = {'', table.concat(expired, ',')}
local record = {}
for i = 1, math.min(ARGS.n, #cands) do
  local id, kind = cands[i][1], cands[i][3]
  redis.call('ZREM', KK[kind].ready, id)
  local st = get_state(id)
  set_status(id, kind, st, 'claimed')
  st.attempts = st.attempts + 1
  -- On a board of several shards each has its own counter: the shard's number makes it unique.
  local fence = redis.call('HINCRBY', K_META, 'fence', 1)
  st.token = CTX.shard and (CTX.shard .. '.' .. fence) or tostring(fence)
  st.owner, st.handled_by = ARGS.agent, ARGS.agent
  st.deadline = NOW + ARGS.lease_ms
  st.claimed_at = NOW
  redis.call('ZADD', KK[kind].leased, st.deadline, id)
  put_state(id, st)
  emit('claimed', id, kind, st, {agent = ARGS.agent})
  claimed_item(out, id, kind)
  record[#record + 1] = id .. '=' .. st.token
end
if #record > 0 then  -- a claim that took nothing has nothing to strand: no record
  redis.call('SET', K_REQUEST, table.concat(record, ','), 'EX', 300)
end

-- Chain the wake-up: if work is left, the next blocked claimer should look too.
for _, k in ipairs(kinds) do
  if redis.call('ZCARD', KK[k].ready) > 0 then wake(KK[k]) end
end
local due = next_due(kinds)
if due then out[1] = tostring(due) end
flush_audit()
return out
