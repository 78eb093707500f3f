-- delete_versioned
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

DELETE FROM comments OUTPUT deleted.id WHERE comments.id = ? AND comments.version = ?

-- parameters, in order (as passed to pyodbc):
--   1. id_1 = UUID('00000000-0000-0000-0000-000000000001')
--   2. version_1 = b'\x00\x00\x00\x00\x00\x00\x07\xd1'
