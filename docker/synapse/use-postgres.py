"""Point a freshly generated Synapse config at the compose file's Postgres (README step 2).

Run inside the Synapse image, which has Python and PyYAML:
    docker compose run --rm --no-deps --entrypoint python synapse /setup/use-postgres.py

Synapse reads its database password only from homeserver.yaml, so it is copied there from the
secret file; homeserver.yaml is written with mode 0600 in data/synapse, beside Synapse's signing
key. Running it again changes nothing more.
"""

from __future__ import annotations

import os
import sys

import yaml

CONFIG = os.environ.get("SYNAPSE_CONFIG_PATH", "/data/homeserver.yaml")
PASSWORD_FILE = os.environ.get("SYNAPSE_DB_PASSWORD_FILE", "/run/secrets/synapse_db_password")


def main() -> int:
    try:
        with open(CONFIG, encoding="utf-8") as f:
            config = yaml.safe_load(f)
        with open(PASSWORD_FILE, encoding="utf-8") as f:
            password = f.read().strip()
    except OSError as e:
        print(f"use-postgres: {e.filename}: {e.strerror} (run README step 2's generate first)")
        return 1
    config["database"] = {
        "name": "psycopg2",
        "args": {
            "user": "synapse",
            "password": password,
            "dbname": "synapse",
            "host": "postgres",
            "port": 5432,
            "cp_min": 5,
            "cp_max": 10,
        },
    }
    owner = os.stat(CONFIG)
    fd = os.open(CONFIG + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    if os.geteuid() == 0:  # `compose run --entrypoint` runs as root: keep Synapse's owner
        os.chown(CONFIG + ".new", owner.st_uid, owner.st_gid)
    os.replace(CONFIG + ".new", CONFIG)
    print(f"use-postgres: {CONFIG} now uses the postgres service's synapse database")
    return 0


if __name__ == "__main__":
    sys.exit(main())
