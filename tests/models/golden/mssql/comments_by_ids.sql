-- comments_by_ids
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

SELECT comments.id, comments.workspace_id, comments.card_id, comments.author_id, comments.body, comments.created_at, comments.version
FROM comments
WHERE comments.id IN (?, ?, ?)

-- parameters, in order (as passed to pyodbc):
--   1. id_1_1 = UUID('00000000-0000-0000-0000-000000000001')
--   2. id_1_2 = UUID('00000000-0000-0000-0000-000000000002')
--   3. id_1_3 = UUID('00000000-0000-0000-0000-000000000003')
