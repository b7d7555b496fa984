"""docker/: the Dockerfile (hadolint and what a clinic relies on), the compose file (the
compose-spec schema and the same), the shell scripts (shellcheck) and the setup script."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from bot.__main__ import build_parser
from tests.deploy.conftest import DOCKER, ROOT, tool

DOCKERFILE = (DOCKER / "Dockerfile").read_text(encoding="utf-8")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    found = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def last(name: str) -> str:
    values = [rest for word, rest in instructions(DOCKERFILE) if word == name]
    assert values, f"no {name} in docker/Dockerfile"
    return values[-1]


def runtime_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE)
    starts = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    return steps[starts[-1] :]


def test_hadolint_passes() -> None:
    done = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKER / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_two_stages_on_a_pinned_python_312_slim_bookworm() -> None:
    froms = [rest for word, rest in instructions(DOCKERFILE) if word == "FROM"]
    assert len(froms) == 2
    base = next(rest for word, rest in instructions(DOCKERFILE) if word == "ARG")
    assert re.fullmatch(
        r"PYTHON_IMAGE=python:3\.12\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base
    ), base
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    assert "cp311 and cp312 only" in DOCKERFILE  # why not a newer Python


def test_install_is_wheels_only_and_leaves_the_demo_extra_out() -> None:
    runs = " ".join(rest for word, rest in instructions(DOCKERFILE) if word == "RUN")
    assert "--only-binary=:all:" in runs
    assert "/opt/chaperone" in runs
    assert "[demo]" not in runs and "pgserver" not in runs
    for compiler in ("gcc", "build-essential", "cmake", "apt-get install"):
        assert compiler not in runs


def test_runs_as_a_numeric_non_root_user() -> None:
    user = last("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, user
    assert gid == "" or (gid.isdigit() and int(gid) != 0), user
    # nothing after USER switches back
    stage = runtime_stage()
    after = stage[[word for word, _ in stage].index("USER") :]
    assert [w for w, _ in after].count("USER") == 1


def test_writes_only_to_data_and_tmp() -> None:
    assert last("VOLUME") in ("/data", '["/data"]')
    assert last("WORKDIR") == "/data"
    env = " ".join(rest for word, rest in runtime_stage() if word == "ENV")
    assert "HOME=/tmp" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    # no entrypoint script that chowns at start (breaks under --user and read-only roots)
    assert "chown" not in " ".join(rest for word, rest in runtime_stage() if word == "ENTRYPOINT")


def test_healthcheck_port_and_labels() -> None:
    health = last("HEALTHCHECK")
    assert health.endswith('CMD ["chaperone", "healthcheck"]'), health
    assert last("EXPOSE") == "8080"
    labels = " ".join(rest for word, rest in instructions(DOCKERFILE) if word == "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_image_command_line_is_the_cli() -> None:
    """ENTRYPOINT + CMD, and the health check, parse with the real CLI parser."""
    entrypoint = json.loads(last("ENTRYPOINT"))
    cmd = json.loads(last("CMD"))
    assert entrypoint == ["chaperone"]
    assert cmd == ["run", "-c", "/data/config.yaml"]
    parser = build_parser()
    args = parser.parse_args(cmd)
    assert args.func.__name__ == "cmd_run" and args.config == "/data/config.yaml"
    health = json.loads(last("HEALTHCHECK").split("CMD", 1)[1])
    assert health[0] == "chaperone"
    assert parser.parse_args(health[1:]).func.__name__ == "cmd_healthcheck"
    # the console script the ENTRYPOINT names is the one pyproject installs
    assert 'chaperone = "bot.__main__:main"' in (ROOT / "pyproject.toml").read_text("utf-8")


def test_dockerignore_lets_in_only_what_builds_the_wheel() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "config.example.yaml", "bot"}
    copied = {
        part.rstrip("/")
        for word, rest in instructions(DOCKERFILE)
        if word == "COPY" and "--from" not in rest
        for part in rest.split()[:-1]
    }
    assert copied <= allowed | {"./bot"} and "config.example.yaml" in copied


# --- compose ---------------------------------------------------------------------------------

SCHEMA = json.loads((ROOT / "tests/deploy/schemas/compose-spec.json").read_text("utf-8"))


def compose_errors(document: object) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_matches_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    assert compose_errors(compose) == []


def test_schema_check_catches_a_mistake(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["chaperone"]["depends_on"]["postgres"]["condition"] = "healthy"
    broken["services"]["chaperone"]["restart_policy"] = "always"
    assert len(compose_errors(broken)) >= 2


def test_bot_starts_only_when_postgres_and_synapse_are_healthy(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["chaperone"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "synapse": {"condition": "service_healthy"},
    }
    for name in ("postgres", "synapse", "chaperone"):
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["restart"] == "unless-stopped", name
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert services["chaperone"]["healthcheck"]["test"] == ["CMD", "chaperone", "healthcheck"]
    assert re.fullmatch(r"\S+/synapse:v\d+\.\d+\.\d+", services["synapse"]["image"])
    assert re.fullmatch(r"\S+/postgres:16\.\d+-bookworm", services["postgres"]["image"])


def test_ports_only_on_loopback(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_element_is_optional_under_the_web_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["element"]["profiles"] == ["web"]
    assert all("profiles" not in s for n, s in services.items() if n != "element")
    config = json.loads((DOCKER / "element/config.json").read_text("utf-8"))
    assert config["default_server_config"]["m.homeserver"]["base_url"]


def test_bot_container_is_locked_down(compose: dict[str, Any]) -> None:
    bot = compose["services"]["chaperone"]
    assert bot["read_only"] is True and bot["tmpfs"] == ["/tmp"]
    assert bot["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in bot["security_opt"]
    assert bot["user"].startswith("${RUN_UID")
    assert [v.split(":")[1] for v in bot["volumes"]] == ["/data"]
    assert bot["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}


SECRET_WORDS = re.compile(r"pass|secret|key|token|_url", re.IGNORECASE)


def test_no_secret_values_in_compose(compose: dict[str, Any]) -> None:
    """Every secret-looking variable names a file under /run/secrets; every secret is a file."""
    for name, service in compose["services"].items():
        for var, value in (service.get("environment") or {}).items():
            if SECRET_WORDS.search(var):
                assert var.endswith("_FILE"), (name, var)
                secret = str(value).removeprefix("/run/secrets/")
                assert secret != value and secret in service["secrets"], (name, var)
    for secret in compose["secrets"].values():
        assert set(secret) == {"file"} and secret["file"].startswith("./secrets/")
    text = (DOCKER / "compose.yaml").read_text("utf-8") + (DOCKER / ".env.example").read_text(
        "utf-8"
    )
    assert not re.search(r"postgres(ql)?://\w+:[^@\s$]+@", text)  # no URL with a password
    assert "PASSWORD=" not in text.replace("_FILE", "")


def test_the_bot_gets_every_secret_its_config_needs(compose: dict[str, Any]) -> None:
    from bot.config import env_var

    env = compose["services"]["chaperone"]["environment"]
    for key in (
        "database.url",
        "database.owner_url",  # migrations as the owner, the bot as the runtime role
        "bot.password",
        "encryption.pickle_key",
        "audit.hmac_key",
        "http.api_token",
    ):
        assert env_var(key) + "_FILE" in env, key


def test_postgres_init_script_is_mounted_and_uses_the_secrets(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in postgres["volumes"]}
    script = mounts["/docker-entrypoint-initdb.d/10-init-databases.sh"]
    assert (DOCKER / script).resolve() == DOCKER / "postgres/init-databases.sh"
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    text = (DOCKER / "postgres/init-databases.sh").read_text("utf-8")
    for name in re.findall(r"\$secrets_dir/(\w+)", text):
        assert name in postgres["secrets"], name


# --- shell scripts ---------------------------------------------------------------------------


def shell_scripts() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    found = []
    for name in listed:
        path = ROOT / name
        if not path.is_file() or path.is_symlink():
            continue
        with path.open("rb") as f:
            first = f.readline(100)
        if name.endswith(".sh") or re.match(rb"#!\S*(/|env )(ba|da|k)?sh\b", first):
            found.append(path)
    return found


def test_shellcheck_passes_on_every_shell_script() -> None:
    scripts = shell_scripts()
    names = {str(p.relative_to(ROOT)) for p in scripts}
    assert {"run.sh", ".ci/run", "docker/setup.sh", "docker/postgres/init-databases.sh"} <= names
    done = subprocess.run(
        [tool("shellcheck"), "--severity=style", *map(str, scripts)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_scripts_are_executable() -> None:
    for script in shell_scripts():
        assert script.stat().st_mode & stat.S_IXUSR, script


def test_setup_makes_every_secret_compose_reads_once(
    tmp_path: Path, compose: dict[str, Any]
) -> None:
    work = tmp_path / "docker"
    work.mkdir()
    for name in ("setup.sh", ".env.example"):
        (work / name).write_bytes((DOCKER / name).read_bytes())
        (work / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("RUN_UID", "RUN_GID")}
    done = subprocess.run(
        ["bash", str(work / "setup.sh")], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for secret in compose["secrets"].values():
        file = work / secret["file"]
        assert file.is_file(), file
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        assert len(file.read_text().strip()) >= 32
    owner_pw = (work / "secrets/chaperone_owner_db_password").read_text().strip()
    bot_pw = (work / "secrets/chaperone_db_password").read_text().strip()
    assert (work / "secrets/chaperone_database_owner_url").read_text().strip() == (
        f"postgresql://chaperone_owner:{owner_pw}@postgres:5432/chaperone"
    )
    assert (work / "secrets/chaperone_database_url").read_text().strip() == (
        f"postgresql://chaperone:{bot_pw}@postgres:5432/chaperone"
    )
    assert len({(work / s["file"]).read_text() for s in compose["secrets"].values()}) == len(
        compose["secrets"]
    )
    dotenv = (work / ".env").read_text()
    expected_uid = os.getuid() or 10001
    assert f"RUN_UID={expected_uid}\n" in dotenv
    for data in ("postgres", "synapse", "chaperone"):
        assert stat.S_IMODE((work / "data" / data).stat().st_mode) == 0o700
    # again: nothing is replaced
    before = {p.name: p.read_text() for p in (work / "secrets").iterdir()}
    again = subprocess.run(["bash", str(work / "setup.sh")], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert {p.name: p.read_text() for p in (work / "secrets").iterdir()} == before


def test_env_example_covers_what_compose_interpolates(compose: dict[str, Any]) -> None:
    text = (DOCKER / "compose.yaml").read_text("utf-8")
    used = set(re.findall(r"\$\{(\w+)", text))
    defined = {
        line.split("=", 1)[0]
        for line in (DOCKER / ".env.example").read_text("utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert used <= defined, used - defined


def test_synapse_use_postgres_rewrites_a_generated_config(tmp_path: Path) -> None:
    """README step 2's database switch, on a config Synapse itself generated."""
    config = tmp_path / "homeserver.yaml"
    generated = subprocess.run(
        [
            str(Path(tool("python"))),
            "-m",
            "synapse.app.homeserver",
            "--generate-config",
            "--server-name=clinic.example",
            f"--config-path={config}",
            f"--data-directory={tmp_path}",
            "--report-stats=no",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generated.returncode == 0, generated.stderr
    password = tmp_path / "synapse_db_password"
    password.write_text("s3cret-for-the-test-only\n")
    env = {
        **os.environ,
        "SYNAPSE_CONFIG_PATH": str(config),
        "SYNAPSE_DB_PASSWORD_FILE": str(password),
    }
    for _ in range(2):  # idempotent
        done = subprocess.run(
            [tool("python"), str(DOCKER / "synapse/use-postgres.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    data = yaml.safe_load(config.read_text())
    assert data["database"]["name"] == "psycopg2"
    assert data["database"]["args"]["password"] == "s3cret-for-the-test-only"
    assert data["database"]["args"]["host"] == "postgres"
    assert data["server_name"] == "clinic.example"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_readme_commands_use_real_services_and_subcommands(compose: dict[str, Any]) -> None:
    """Each `docker compose run|exec SERVICE` in docker/README.md names a compose service, and
    each chaperone subcommand it runs parses with the CLI."""
    readme = (DOCKER / "README.md").read_text("utf-8")
    commands = [
        line.strip()
        for line in re.findall(r"```sh\n(.*?)```", readme, re.DOTALL)
        for line in line.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    seen_run = False
    for command in commands:
        words = shlex.split(command.split(" #")[0].rstrip(" \\"), posix=True)
        if words[:3] in (["docker", "compose", "run"], ["docker", "compose", "exec"]):
            rest = words[3:]
            while rest and rest[0].startswith("-"):
                option = rest.pop(0)
                if option in ("--entrypoint", "--user", "-u", "-e") and "=" not in option:
                    rest.pop(0)
            service, args = rest[0], rest[1:]
            assert service in compose["services"], command
            if service == "chaperone" and "--entrypoint" not in words:
                build_parser().parse_args(args)
                seen_run = True
    assert seen_run
    for step in (
        "setup.sh",
        "generate",
        "register_new_matrix_user",
        "docker compose up",
        "recovery-key",
        "pg_dump",
    ):
        assert step in readme, step


def test_readme_first_screen_points_to_both_ways_in() -> None:
    first_screen = "\n".join((ROOT / "README.md").read_text("utf-8").splitlines()[:25])
    assert "./run.sh demo" in first_screen
    assert "docker/README.md" in first_screen


def test_scaling_doc_covers_what_the_issue_asks() -> None:
    text = (ROOT / "docs/scaling.md").read_text("utf-8")
    for topic in (
        "Patroni",
        "CloudNativePG",
        "advisory lock follows the primary",
        "workers",
        "warm standby",
        "rooms per bot",
        "Sync size",
        "bench/",
        "Application-service mode",
    ):
        assert topic in text, topic


def test_readme_shell_blocks_pass_shellcheck(tmp_path: Path) -> None:
    """The commands a newcomer pastes from docker/README.md, checked as one bash script."""
    readme = (DOCKER / "README.md").read_text("utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert len(blocks) >= 8
    script = tmp_path / "readme.sh"
    script.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + "\n".join(blocks))
    done = subprocess.run(
        [tool("shellcheck"), "--severity=warning", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
