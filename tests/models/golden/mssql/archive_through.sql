-- archive_through
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

SELECT max(events.seq) AS max_1
FROM events
WHERE events.workspace_id = ? AND events.seq < coalesce((SELECT min(events.seq) AS min_1
FROM events
WHERE events.workspace_id = ? AND events.occurred_at >= ?), ?)

-- parameters, in order (as passed to pyodbc):
--   1. workspace_id_1 = UUID('00000000-0000-0000-0000-000000000001')
--   2. workspace_id_2 = UUID('00000000-0000-0000-0000-000000000001')
--   3. occurred_at_1 = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901)
--   4. param_1 = 9223372036854775807
