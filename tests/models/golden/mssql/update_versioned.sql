-- update_versioned
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

UPDATE cards SET title=?, status=? OUTPUT inserted.version WHERE cards.id = ? AND cards.version = ?

-- parameters, in order (as passed to pyodbc):
--   1. title = 'Ship it'
--   2. status = 'DONE'
--   3. id_1 = UUID('00000000-0000-0000-0000-000000000001')
--   4. version_1 = b'\x00\x00\x00\x00\x00\x00\x07\xd1'
