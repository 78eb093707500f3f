"""CONCORD_ENV=production: nothing to explore, /metrics behind a token, unsafe settings refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.app import create_app
from server.graphiql import asset_url
from tests.api import running_app, settings_for

METRICS_TOKEN = "metrics-token-that-is-long-enough-0123456789"


def test_unsafe_production_settings_are_refused_with_every_reason(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}"
    settings = settings_for(
        url, tmp_path, concord_env="production", debug=True, jwt_secret=None, metrics_token="short"
    )
    with pytest.raises(RuntimeError) as refused:
        create_app(settings)
    message = str(refused.value)
    assert message.startswith("CONCORD_ENV=production refuses to start")
    for reason in ("DEBUG=true", "JWT_SECRET is unset", "METRICS_TOKEN must be at least 32"):
        assert reason in message
    # The same settings start in development.
    create_app(settings.model_copy(update={"concord_env": "development"}))


async def test_production_hides_the_schema_and_guards_metrics(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(
        database_url, tmp_path, concord_env="production", metrics_token=METRICS_TOKEN
    )
    async with running_app(settings) as api:
        introspection = await api("{ __schema { types { name } } }")
        assert "introspection" in introspection["errors"][0]["message"].lower()
        assert await api("{ __typename }") == {"data": {"__typename": "Query"}}
        typo = await api("{ workspacez { nodes { id } } }")
        assert "Did you mean" not in typo["errors"][0]["message"]

        page = await api.client.get("/graphql", headers={"accept": "text/html"})
        assert "GraphiQL" not in page.text
        assert (await api.client.get(asset_url("graphiql.min.js"))).status_code == 404

        assert (await api.client.get("/metrics")).status_code == 401
        wrong = await api.client.get("/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await api.client.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
        assert ok.status_code == 200
        assert "concord_" in ok.text or "http_" in ok.text

    # Without a token, production serves no /metrics at all.
    unguarded = settings.model_copy(update={"metrics_token": None})
    async with running_app(unguarded) as api:
        assert (await api.client.get("/metrics")).status_code == 404


async def test_development_keeps_introspection_and_graphiql(
    database_url: str, tmp_path: Path
) -> None:
    async with running_app(settings_for(database_url, tmp_path)) as api:
        body = await api("{ __schema { queryType { name } } }")
        assert body == {"data": {"__schema": {"queryType": {"name": "Query"}}}}
        page = await api.client.get("/graphql", headers={"accept": "text/html"})
        assert "GraphiQL" in page.text
        assert (await api.client.get("/metrics")).status_code == 200
