-- read_scope
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

SELECT (SELECT event_streams.last_seq
FROM event_streams
WHERE event_streams.workspace_id = ?) AS last_seq, (SELECT memberships.role
FROM memberships
WHERE memberships.workspace_id = ? AND memberships.user_id = ?) AS role, (SELECT min(events.seq) AS min_1
FROM events
WHERE events.workspace_id = ?) AS first_seq

-- parameters, in order (as passed to pyodbc):
--   1. workspace_id_1 = UUID('00000000-0000-0000-0000-000000000001')
--   2. workspace_id_2 = UUID('00000000-0000-0000-0000-000000000001')
--   3. user_id_1 = UUID('00000000-0000-0000-0000-000000000002')
--   4. workspace_id_3 = UUID('00000000-0000-0000-0000-000000000001')
