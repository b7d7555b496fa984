#!/usr/bin/env bash
# Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d/).
# Creates Chaperone's own database with SPEC 5's two roles, and Synapse's separate database:
#   chaperone_owner  owns the chaperone database and its tables; the bot uses it only to run
#                    migrations and to grant the runtime role its share (database.owner_url)
#   chaperone        the bot at run time (database.url): NOSUPERUSER, owns nothing, so it can
#                    neither disable the audit triggers nor TRUNCATE
#   synapse          owns the synapse database (C collation, as Synapse requires)
# Passwords come from the secret files, read by psql itself (\set ... `cat`), so none of them
# appears on a command line.
set -euo pipefail

secrets_dir=${SECRETS_DIR:-/run/secrets}
for name in chaperone_owner_db_password chaperone_db_password synapse_db_password; do
  if [ ! -s "$secrets_dir/$name" ]; then
    echo "init-databases: $secrets_dir/$name is missing or empty (run docker/setup.sh)" >&2
    exit 1
  fi
done

psql -v ON_ERROR_STOP=1 --no-psqlrc \
  --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" <<SQL
\\set owner_pw \`cat "$secrets_dir/chaperone_owner_db_password"\`
\\set bot_pw \`cat "$secrets_dir/chaperone_db_password"\`
\\set synapse_pw \`cat "$secrets_dir/synapse_db_password"\`
CREATE ROLE chaperone_owner LOGIN PASSWORD :'owner_pw';
CREATE ROLE chaperone LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'bot_pw';
CREATE DATABASE chaperone OWNER chaperone_owner ENCODING 'UTF8';
REVOKE ALL ON DATABASE chaperone FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE chaperone TO chaperone;
CREATE ROLE synapse LOGIN PASSWORD :'synapse_pw';
CREATE DATABASE synapse OWNER synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'
  TEMPLATE template0;
REVOKE ALL ON DATABASE synapse FROM PUBLIC;
SQL
echo "init-databases: created databases chaperone (roles chaperone_owner, chaperone) and synapse"
