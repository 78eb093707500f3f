"""Tracing shared by every layer (server, resolvers, models, subscriptions); see tracing.py."""
