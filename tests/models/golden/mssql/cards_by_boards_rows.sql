-- cards_by_boards_rows
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

SELECT anon_1.id, anon_1.workspace_id, anon_1.board_id, anon_1.title, anon_1.description, anon_1.status, anon_1.position, anon_1.assignee_id, anon_1.due_date, anon_1.created_at, anon_1.version
FROM (SELECT cards.id AS id, cards.workspace_id AS workspace_id, cards.board_id AS board_id, cards.title AS title, cards.description AS description, cards.status AS status, cards.position AS position, cards.assignee_id AS assignee_id, cards.due_date AS due_date, cards.created_at AS created_at, cards.version AS version, row_number() OVER (PARTITION BY cards.board_id ORDER BY cards.position, cards.id) AS rank
FROM cards
WHERE cards.board_id IN (?) AND (cards.position > ? OR cards.position = ? AND cards.id > ?)) AS anon_1
WHERE anon_1.rank <= ? ORDER BY anon_1.board_id, anon_1.rank

-- parameters, in order (as passed to pyodbc):
--   1. parent_ids_1 = UUID('00000000-0000-0000-0000-000000000001')
--   2. after_0 = 1.5
--   3. after_0 = 1.5
--   4. after_1 = UUID('00000000-0000-0000-0000-000000000003')
--   5. limit = 51
