-- insert_versioned
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

INSERT INTO boards (id, workspace_id, name, created_at) OUTPUT inserted.version VALUES (?, ?, ?, ?)

-- parameters, in order (as passed to pyodbc):
--   1. id = UUID('00000000-0000-0000-0000-000000000001')
--   2. workspace_id = UUID('00000000-0000-0000-0000-000000000002')
--   3. name = 'Plan'
--   4. created_at = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901)
