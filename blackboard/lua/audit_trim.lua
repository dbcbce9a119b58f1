-- audit_trim.lua: after the exporter has fsynced records to a file, record how far the export got
-- and drop those records from Redis, in one step.
-- KEYS: the fixed board keys (lib.lua); writes meta (audit_exported_*) and the audit stream.
-- ARGS: {from = seq the export started after, seq, hash = last exported record's,
--   file_hash = its link in the files' chain, minid = first stream id to keep}.
-- Returns {ok = records left in Redis} or {err = 'moved', seq = n} when another exporter's
-- state is there (the caller exported nothing that counts and must look again).
local at = tonumber(redis.call('HGET', K_META, 'audit_exported_seq')) or 0
if at ~= ARGS.from then return reply({err = 'moved', seq = at}) end
redis.call('HSET', K_META, 'audit_exported_seq', ARGS.seq, 'audit_exported_hash', ARGS.hash,
           'audit_exported_file_hash', ARGS.file_hash)
redis.call('XTRIM', K_AUDIT, 'MINID', ARGS.minid)
return reply({ok = redis.call('XLEN', K_AUDIT)})
