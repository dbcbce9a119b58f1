-- policy_load.lua: make a policy the board's, with its audit record, in one step.
-- KEYS: the fixed board keys (lib.lua) + the board's policy hash (version -> policy JSON).
-- ARGS: {version, doc = policy JSON, sources = the files it came from}.
-- Writes the policy hash and meta.policy_version; its audit record carries the new version.
-- Returns {ok = previous version or ''}.
local K_POLICY = KEYS[NFIXED + 1]
local previous = redis.call('HGET', K_META, 'policy_version') or ''
redis.call('HSET', K_POLICY, ARGS.version, ARGS.doc)
redis.call('HSET', K_META, 'policy_version', ARGS.version)
CTX.policy = ARGS.version
audit(previous == ARGS.version and 'policy_reloaded' or 'policy_loaded', '', '', '', ARGS.doc, ARGS.sources)
return reply({ok = previous})
