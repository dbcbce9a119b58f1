-- ratelimit.lua: one model's shared request and token budget, across every daemon on the board.
-- KEYS: the fixed board keys (lib.lua, unused) + the model's limiter hash
--   ({bb:<board>}:ratelimit:<model>: req, tok = tokens left in each bucket; ts = last refill ms;
--   until = no calls before this ms, after a 429). Expires after two idle minutes.
-- ARGS: {op = 'take' | 'adjust' | 'cooldown', rpm?, tpm?, tokens = estimate or correction,
--   ms = cooldown length}. Buckets hold a minute's worth and refill continuously.
-- Returns {ok = 0} when the call may go now, or {ok = wait ms} (take); {ok = 0} otherwise.
local key = KEYS[NFIXED + 1]
local h = redis.call('HMGET', key, 'req', 'tok', 'ts', 'until')
local rpm, tpm = ARGS.rpm, ARGS.tpm
local ts = tonumber(h[3]) or NOW
local req = tonumber(h[1]) or rpm or 0
local tok = tonumber(h[2]) or tpm or 0
local cool = tonumber(h[4]) or 0
local dt = math.max(0, NOW - ts)
if rpm then req = math.min(rpm, req + dt * rpm / 60000) end
if tpm then tok = math.min(tpm, tok + dt * tpm / 60000) end

local wait = 0
if ARGS.op == 'take' then
  if cool > NOW then wait = cool - NOW end
  if rpm and req < 1 then wait = math.max(wait, math.ceil((1 - req) * 60000 / rpm)) end
  -- A call bigger than the whole bucket may go when the bucket is full (never blocks forever).
  local need = tpm and math.min(ARGS.tokens or 0, tpm) or 0
  if tpm and tok < need then wait = math.max(wait, math.ceil((need - tok) * 60000 / tpm)) end
  if wait == 0 then
    if rpm then req = req - 1 end
    if tpm then tok = tok - (ARGS.tokens or 0) end
  end
elseif ARGS.op == 'adjust' then
  if tpm then tok = tok - (ARGS.tokens or 0) end
elseif ARGS.op == 'cooldown' then
  cool = math.max(cool, NOW + ARGS.ms)
end
redis.call('HSET', key, 'req', tostring(req), 'tok', tostring(tok), 'ts', NOW, 'until', cool)
redis.call('PEXPIRE', key, 120000 + math.max(0, cool - NOW))
return reply({ok = wait})
