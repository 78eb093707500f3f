-- boards_by_workspaces_after
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

SELECT anon_1.id, anon_1.workspace_id, anon_1.name, anon_1.created_at, anon_1.version
FROM (SELECT boards.id AS id, boards.workspace_id AS workspace_id, boards.name AS name, boards.created_at AS created_at, boards.version AS version, row_number() OVER (PARTITION BY boards.workspace_id ORDER BY boards.created_at, boards.id) AS rank
FROM boards
WHERE boards.workspace_id IN (?, ?) AND (boards.created_at > ? OR boards.created_at = ? AND boards.id > ?)) AS anon_1
WHERE anon_1.rank <= ? ORDER BY anon_1.workspace_id, anon_1.rank

-- parameters, in order (as passed to pyodbc):
--   1. parent_ids_1 = UUID('00000000-0000-0000-0000-000000000001')
--   2. parent_ids_2 = UUID('00000000-0000-0000-0000-000000000002')
--   3. after_0 = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901)
--   4. after_0 = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901)
--   5. after_1 = UUID('00000000-0000-0000-0000-000000000003')
--   6. limit = 21
