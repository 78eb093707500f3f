-- users_by_ids_rows
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

SELECT users.id, users.email, users.display_name, users.password_hash, users.created_at
FROM users
WHERE users.id IN (?, ?)

-- parameters, in order (as passed to pyodbc):
--   1. id_1_1 = UUID('00000000-0000-0000-0000-000000000001')
--   2. id_1_2 = UUID('00000000-0000-0000-0000-000000000002')
