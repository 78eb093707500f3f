-- memberships_by_workspaces_rows
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

SELECT memberships.id, memberships.workspace_id, memberships.user_id, memberships.role, memberships.created_at
FROM memberships
WHERE memberships.workspace_id IN (?) ORDER BY memberships.workspace_id, memberships.created_at, memberships.id

-- parameters, in order (as passed to pyodbc):
--   1. workspace_id_1_1 = UUID('00000000-0000-0000-0000-000000000001')
