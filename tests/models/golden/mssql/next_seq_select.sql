-- next_seq_select
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

SELECT event_streams.last_seq
FROM event_streams
WHERE event_streams.workspace_id = ?

-- parameters, in order (as passed to pyodbc):
--   1. workspace_id_1 = UUID('00000000-0000-0000-0000-000000000002')
