-- workspaces_by_ids
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

SELECT workspaces.id, workspaces.name, workspaces.created_at, workspaces.version
FROM workspaces
WHERE workspaces.id IN (?, ?, ?)

-- parameters, in order (as passed to pyodbc):
--   1. id_1_1 = UUID('00000000-0000-0000-0000-000000000001')
--   2. id_1_2 = UUID('00000000-0000-0000-0000-000000000002')
--   3. id_1_3 = UUID('00000000-0000-0000-0000-000000000003')
