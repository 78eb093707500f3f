-- event_insert
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

INSERT INTO events (workspace_id, seq, type, entity_type, entity_id, entity_version, actor_id, changes, occurred_at) OUTPUT inserted.id, inserted.workspace_id, inserted.seq, inserted.type, inserted.entity_type, inserted.entity_id, inserted.entity_version, inserted.actor_id, inserted.changes, inserted.occurred_at VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)

-- parameters, in order (as passed to pyodbc):
--   1. workspace_id = UUID('00000000-0000-0000-0000-000000000002')
--   2. seq = 42
--   3. type = 'card.updated'
--   4. entity_type = 'Card'
--   5. entity_id = UUID('00000000-0000-0000-0000-000000000001')
--   6. entity_version = '00000000000007d1'
--   7. actor_id = UUID('00000000-0000-0000-0000-000000000003')
--   8. changes = '[{"field": "title", "old": "Draft", "new": "Ship it"}]'
--   9. occurred_at = <utcnow(), computed at execution>
