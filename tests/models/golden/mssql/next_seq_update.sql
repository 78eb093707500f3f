-- next_seq_update
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

UPDATE event_streams SET last_seq=(event_streams.last_seq + ?) WHERE event_streams.workspace_id = ?

-- parameters, in order (as passed to pyodbc):
--   1. last_seq_1 = 1
--   2. workspace_id_1 = UUID('00000000-0000-0000-0000-000000000002')
