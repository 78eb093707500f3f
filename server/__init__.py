"""The Starlette application, its settings, middleware, health, metrics and the CLI."""
