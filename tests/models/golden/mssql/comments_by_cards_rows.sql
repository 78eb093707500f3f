-- comments_by_cards_rows
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

SELECT anon_1.id, anon_1.workspace_id, anon_1.card_id, anon_1.author_id, anon_1.body, anon_1.created_at, anon_1.version
FROM (SELECT comments.id AS id, comments.workspace_id AS workspace_id, comments.card_id AS card_id, comments.author_id AS author_id, comments.body AS body, comments.created_at AS created_at, comments.version AS version, row_number() OVER (PARTITION BY comments.card_id ORDER BY comments.created_at, comments.id) AS rank
FROM comments
WHERE comments.card_id IN (?)) AS anon_1
WHERE anon_1.rank <= ? ORDER BY anon_1.card_id, anon_1.rank

-- parameters, in order (as passed to pyodbc):
--   1. parent_ids_1 = UUID('00000000-0000-0000-0000-000000000001')
--   2. limit = 11
