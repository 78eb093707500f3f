-- archive_events_page
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

SELECT TOP 2000 events.id, events.workspace_id, events.seq, events.type, events.entity_type, events.entity_id, events.entity_version, events.actor_id, events.changes, events.occurred_at
FROM events
WHERE events.workspace_id = ? AND events.seq > ? AND events.seq <= ? ORDER BY events.seq

-- parameters, in order (as passed to pyodbc):
--   1. workspace_id_1 = UUID('00000000-0000-0000-0000-000000000001')
--   2. seq_1 = 2000
--   3. seq_2 = 5000
