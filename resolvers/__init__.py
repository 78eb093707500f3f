"""Use cases: authorize, validate, change, record the event. No SQL text here."""
