"""Authentication: passwords, tokens, the request authentication backend."""
