-- cards_by_ids
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

SELECT cards.id, cards.workspace_id, cards.board_id, cards.title, cards.description, cards.status, cards.position, cards.assignee_id, cards.due_date, cards.created_at, cards.version
FROM cards
WHERE cards.id IN (?, ?, ?)

-- parameters, in order (as passed to pyodbc):
--   1. id_1_1 = UUID('00000000-0000-0000-0000-000000000001')
--   2. id_1_2 = UUID('00000000-0000-0000-0000-000000000002')
--   3. id_1_3 = UUID('00000000-0000-0000-0000-000000000003')
