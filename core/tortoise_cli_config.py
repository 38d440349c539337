"""For the `tortoise` CLI: `tortoise -c core.tortoise_cli_config.TORTOISE_ORM makemigrations`."""

from core.db import tortoise_config

TORTOISE_ORM = tortoise_config("sqlite://:memory:")
