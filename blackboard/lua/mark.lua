-- mark.lua: reinforce an item's mark (pheromone); a stronger mark is claimed sooner.
-- KEYS: the fixed board keys (lib.lua) + ready/delayed/leased/wake of the item's kind.
--   writes state and, when the item is ready, its score in the kind's ready set.
-- ARGS: {id, strength, half_life_ms}
-- The strength decays as 2^(-age / half_life). The stored order key is log2(strength) +
-- marked_at / half_life: decay shifts every key by the same amount, so order holds without
-- rescoring; reinforcing adds the new strength to the decayed one.
-- Returns {ok = strength now} | {err = 'not_found', id} | {needkinds = [...]}.
local kind = redis.call('HGET', K_KIND, ARGS.id)
if not kind then return reply({err = 'not_found', id = ARGS.id}) end
local need = missing_kinds({kind})
if need then return reply({needkinds = need}) end

local EPOCH = 1700000000000
local st = get_state(ARGS.id)
local h = ARGS.half_life_ms
local s = ARGS.strength
if st.mark_strength then
  s = s + st.mark_strength * 2 ^ (-(NOW - st.marked_at) / h)
end
st.mark_strength, st.marked_at = s, NOW
local key = 1048576 + math.log(s) / math.log(2) + (NOW - EPOCH) / h
st.mark = math.max(1, math.min(MARK_SCALE - 1, key))
if redis.call('ZSCORE', KK[kind].ready, ARGS.id) then
  redis.call('ZADD', KK[kind].ready, score(st), ARGS.id)
end
put_state(ARGS.id, st)
emit('marked', ARGS.id, kind, st, {strength = s})
return reply({ok = s})
