-- policy_clear.lua: reopen the board: no policy stored in force, with its audit record, one step.
-- KEYS: the fixed board keys (lib.lua).
-- ARGS: {note = why (kept on the audit record)}.
-- Sets meta.policy_version to 'open' (a cleared board, as opposed to one that never had a
-- policy: daemons that enforce a stored policy drop it on their next beat). The stored
-- versions stay in the policy hash, as history. Returns {ok = previous version or ''}.
local previous = redis.call('HGET', K_META, 'policy_version') or ''
redis.call('HSET', K_META, 'policy_version', 'open')
CTX.policy = ''
audit('policy_cleared', '', '', '', nil, ARGS.note or '')
return reply({ok = previous})
