-- reap.lua: return expired leases to open (or dead) and promote due delayed items, per kind.
-- KEYS: the fixed board keys (lib.lua) + ready/delayed/leased/wake of each kind to sweep.
-- ARGS: {limit} (per kind and per index, so one call stays short)
-- Returns {ok = {expired = n, promoted = n, by_kind = {kind = expired n}}}. Safe to run from many processes at once: each
-- expired lease is handled by whichever call reaches it first, inside one atomic step.
local expired, promoted, by_kind = 0, 0, {}
for _, k in ipairs(CTX.kinds) do
  local n = expire_leases(k, ARGS.limit)
  if n > 0 then by_kind[k] = n end
  expired = expired + n
  promoted = promoted + promote_due(k, ARGS.limit)
end
return reply({ok = {expired = expired, promoted = promoted, by_kind = by_kind}})
