-- archive_workspaces
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

SELECT events.workspace_id
FROM events
WHERE events.occurred_at < ? GROUP BY events.workspace_id ORDER BY events.workspace_id

-- parameters, in order (as passed to pyodbc):
--   1. occurred_at_1 = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901)
