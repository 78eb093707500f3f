-- idempotency_expired
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

DELETE FROM idempotency_keys WHERE idempotency_keys.expires_at <= ? AND idempotency_keys.user_id = ?

-- parameters, in order (as passed to pyodbc):
--   1. expires_at_1 = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901)
--   2. user_id_1 = UUID('00000000-0000-0000-0000-000000000003')
