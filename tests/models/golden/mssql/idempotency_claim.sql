-- idempotency_claim
-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022

INSERT INTO idempotency_keys (id, user_id, idempotency_key, request_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)

-- parameters, in order (as passed to pyodbc):
--   1. id = UUID('00000000-0000-0000-0000-000000000001')
--   2. user_id = UUID('00000000-0000-0000-0000-000000000003')
--   3. idempotency_key = 'retry-1'
--   4. request_hash = 'abababababababababababababababababababababababababababababababab'
--   5. created_at = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901)
--   6. expires_at = datetime.datetime(2026, 1, 3, 3, 4, 5, 678901)
