#!/usr/bin/env bash
# Step 1 of docker/README.md: makes what the compose file reads, without starting anything.
#   secrets/   one random value per file (mode 0600), never overwritten once made
#   .env       from .env.example, with RUN_UID/RUN_GID set to the user every container runs as
#   data/      postgres/, synapse/ and chaperone/ (the bot's /data), owned by that user
# Safe to run again: what exists is kept. Needs only a POSIX shell and /dev/urandom.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -eq 0 ]; then
  # Root would otherwise make root-owned files that only root containers can read.
  run_uid=${RUN_UID:-10001} run_gid=${RUN_GID:-10001}
else
  run_uid=$(id -u) run_gid=$(id -g)
fi

random() {  # 48 URL-safe characters (288 bits) from the kernel's generator
  # tr ends on SIGPIPE once head has its 48 characters: that is the normal way out.
  LC_ALL=C tr -dc 'A-Za-z0-9_-' < /dev/urandom 2> /dev/null | head -c 48 || true
}

umask 077
mkdir -p secrets data/postgres data/synapse data/chaperone

secret() {  # secret NAME [VALUE]: write secrets/NAME unless it exists
  local file="secrets/$1"
  if [ -s "$file" ]; then
    return 0
  fi
  local value=${2:-$(random)}
  if [ "${#value}" -lt 32 ]; then
    echo "setup.sh: could not make a value for $file" >&2
    exit 1
  fi
  printf '%s\n' "$value" > "$file"
  echo "made $file"
}

secret postgres_password
secret synapse_db_password
secret chaperone_owner_db_password
secret chaperone_db_password
# The bot's two database URLs carry the passwords above (SPEC 5: owner for migrations, the
# runtime role for everything else); "postgres" is the compose service's host name.
secret chaperone_database_owner_url \
  "postgresql://chaperone_owner:$(cat secrets/chaperone_owner_db_password)@postgres:5432/chaperone"
secret chaperone_database_url \
  "postgresql://chaperone:$(cat secrets/chaperone_db_password)@postgres:5432/chaperone"
secret chaperone_bot_password
secret chaperone_pickle_key
secret chaperone_hmac_key
secret chaperone_api_token

if [ ! -f .env ]; then
  sed -e "s/^RUN_UID=.*/RUN_UID=$run_uid/" -e "s/^RUN_GID=.*/RUN_GID=$run_gid/" \
    .env.example > .env
  echo "made .env (RUN_UID=$run_uid RUN_GID=$run_gid): set MATRIX_SERVER_NAME in it"
fi

if [ "$(id -u)" -eq 0 ]; then
  chown -R "$run_uid:$run_gid" secrets data
fi
chmod 0700 secrets data/postgres data/synapse data/chaperone
chmod 0600 secrets/*
echo "secrets/ and data/ are ready; next: docker/README.md step 2"
