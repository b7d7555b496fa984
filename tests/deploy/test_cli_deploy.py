"""`chaperone init-config`, `chaperone healthcheck` and the start-up errors a container shows."""

from __future__ import annotations

import http.server
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bot.__main__ import DEFAULT_HEALTH_URL, main
from bot.config import SECRET_KEYS, env_var, load_config
from bot.db.database import PGSERVER_MISSING, EmbeddedPostgres, EmbeddedPostgresUnavailable

ROOT = Path(__file__).resolve().parents[2]


def test_init_config_writes_the_documented_example(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "config.yaml"
    assert main(["init-config", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == (ROOT / "config.example.yaml").read_text(
        encoding="utf-8"
    )
    # it will hold secrets once filled in: readable by its owner only
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    out = capsys.readouterr().out
    assert f"chaperone check-config -c {target}" in out


def test_init_config_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "config.yaml"
    target.write_text("mine: true\n", encoding="utf-8")
    assert main(["init-config", str(target)]) == 1
    assert target.read_text(encoding="utf-8") == "mine: true\n"
    assert "already exists" in capsys.readouterr().err


def test_init_config_defaults_to_config_yaml_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init-config"]) == 0
    assert (tmp_path / "config.yaml").is_file()


def test_init_config_names_a_directory_it_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init-config", str(tmp_path / "absent" / "config.yaml")]) == 2
    assert "cannot create" in capsys.readouterr().err


def test_written_example_loads_once_the_secrets_come_from_files(tmp_path: Path) -> None:
    """What the compose file does: the example as written, secrets from CHAPERONE_*_FILE."""
    target = tmp_path / "config.yaml"
    assert main(["init-config", str(target)]) == 0
    env = {}
    for key in SECRET_KEYS:
        if key in ("homeserver.admin_token", "bot.access_token", "encryption.recovery_key"):
            continue
        secret = tmp_path / key.replace(".", "_")
        value = (
            f"postgresql://{key.replace('.', '_')}:pw@postgres:5432/chaperone"
            if key.startswith("database.")
            else f"{key}-a7Q2pL9vR4mZ8kW3nB6cX1yT5"
        )
        secret.write_text(value + "\n", encoding="utf-8")
        env[env_var(key) + "_FILE"] = str(secret)
    config = load_config(target, env=env)
    assert config.database.url.startswith("postgresql://database_url:")
    assert config.encryption.pickle_key == "encryption.pickle_key-a7Q2pL9vR4mZ8kW3nB6cX1yT5"


def test_package_ships_the_example_config() -> None:
    """init-config reads the example from the package, so it works from an installed wheel."""
    from importlib.resources import files

    shipped = files("bot").joinpath("config.example.yaml")
    assert shipped.read_text(encoding="utf-8") == (ROOT / "config.example.yaml").read_text(
        encoding="utf-8"
    )
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'bot = ["config.example.yaml"]' in pyproject


def test_missing_config_names_the_command_that_creates_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "config.yaml"
    for command in ("run", "check-config"):
        with pytest.raises(SystemExit) as exited:
            main([command, "-c", str(missing)])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert f"create it with: chaperone init-config {missing}" in err


def test_missing_config_through_the_installed_entry_point(tmp_path: Path) -> None:
    """The image's ENTRYPOINT is the `chaperone` console script; its first words on a new
    volume must say what to do."""
    script = Path(sys.executable).with_name("chaperone")
    done = subprocess.run(
        [str(script), "run", "-c", str(tmp_path / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "chaperone init-config" in done.stderr
    assert "Traceback" not in done.stderr


def test_empty_database_url_without_pgserver_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pgserver", None)  # as in the production image
    config = tmp_path / "config.yaml"
    assert main(["init-config", str(config)]) == 0
    for key in SECRET_KEYS:
        monkeypatch.delenv(env_var(key), raising=False)
        monkeypatch.delenv(env_var(key) + "_FILE", raising=False)
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["bot"]["password"] = "p" * 20
    data["encryption"]["pickle_key"] = "k" * 40
    data["audit"]["hmac_key"] = "h" * 40
    data["http"]["api_token"] = "t" * 40
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        main(["check-config", "-c", str(config)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == f"{config}: {PGSERVER_MISSING}"
    assert "pip install 'matrix-chaperone[demo]'" in err
    # and the class itself, for callers outside the CLI
    with pytest.raises(EmbeddedPostgresUnavailable, match=r"matrix-chaperone\[demo\]"):
        EmbeddedPostgres(tmp_path / "data").start()


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        code = 200 if self.path == "/health" else 404
        code = type(self).status if code == 200 else code
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[str, type[_Health]]]:
    handler = type("Handler", (_Health,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_is_zero_only_for_200(
    health_server: tuple[str, type[_Health]], capsys: pytest.CaptureFixture[str]
) -> None:
    base, handler = health_server
    assert main(["healthcheck", "--url", f"{base}/health"]) == 0
    handler.status = 503
    assert main(["healthcheck", "--url", f"{base}/health"]) == 1
    assert "HTTP 503" in capsys.readouterr().err
    assert main(["healthcheck", "--url", f"{base}/elsewhere"]) == 1


def test_healthcheck_nobody_listening_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["healthcheck", "--url", f"http://127.0.0.1:{port}/health", "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unreachable" in err


def test_healthcheck_refuses_other_schemes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["healthcheck", "--url", "file:///etc/passwd"]) == 2


def test_healthcheck_default_is_http_listen_default() -> None:
    from bot.config import HttpConfig

    assert DEFAULT_HEALTH_URL == f"http://{HttpConfig().listen}/health"
    assert DEFAULT_HEALTH_URL == "http://127.0.0.1:8080/health"
