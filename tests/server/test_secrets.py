"""JWT_SECRET: a short secret is refused at start, with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.app import create_app
from tests.api import settings_for


@pytest.mark.parametrize("secret", ["x", "a" * 31, "é" * 15])
def test_short_jwt_secret_is_refused(tmp_path: Path, secret: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}"
    with pytest.raises(RuntimeError, match=r"JWT_SECRET is \d+ bytes; it must be at least 32"):
        create_app(settings_for(url, tmp_path, jwt_secret=secret))


def test_long_jwt_secret_and_the_embedded_default_are_accepted(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}"
    app = create_app(settings_for(url, tmp_path, jwt_secret="a" * 32))
    assert app.state.services.tokens.secret == "a" * 32
    create_app(settings_for(url, tmp_path, jwt_secret=None))  # generated in the data dir
