-- reap.lua: return expired leases to open (or dead) and promote due delayed items, per kind.
-- KEYS: the fixed board keys (lib.lua) + ready/delayed/leased/wake of each kind to sweep.
-- ARGS: {limit} (per kind and per index, so one call stays short)
-- Returns {ok = {expired = n, promoted = n}}. Safe to run from many processes at once: each
-- expired lease is handled by whichever call reaches it first, inside one atomic step.
local expired, promoted = 0, 0
for _, k in ipairs(CTX.kinds) do
  expired = expired + expire_leases(k, ARGS.limit)
  promoted = promoted + promote_due(k, ARGS.limit)
end
return reply({ok = {expired = expired, promoted = promoted}})
