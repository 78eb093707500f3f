-- workspace_of_card
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

SELECT cards.workspace_id
FROM cards
WHERE cards.id = ?

-- parameters, in order (as passed to pyodbc):
--   1. id_1 = UUID('00000000-0000-0000-0000-000000000001')
