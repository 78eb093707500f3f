"""Persistence: tables, engines, sessions, repositories and the event store.

This package is the only place that builds SQL. Everything above it calls repository
functions and receives mapped rows or plain values.
"""
