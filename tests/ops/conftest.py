"""A real Ray head shared by the ops tests (see `ray_heads.start_head`)."""

from __future__ import annotations

import pytest
from ray_heads import start_head


@pytest.fixture(scope="package")
def ray_head():
    yield from start_head()
