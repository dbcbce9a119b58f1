-- deny.lua: the audit record of an action the board's policy refused (and nothing else).
-- KEYS: the fixed board keys (lib.lua). ARGS: {kind, id?, detail = action, kind and the rule}.
-- Returns {ok = the record's seq}.
audit('denied', ARGS.id or '', ARGS.kind, '', nil, ARGS.detail)
return reply({ok = audit_seq})
