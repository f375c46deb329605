"""secrets/ never lets a real secret into git; the alert links come from mixin/links.yml."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mixin.config import LINKS_FILE, load_links
from mixin.generate import main as generate

ROOT = Path(__file__).resolve().parent.parent
SECRETS = ROOT / "secrets"
REAL_LOOKING = re.compile(
    r"hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,}"  # a real webhook
    r"|xox[abpr]-[0-9A-Za-z-]{10,}"  # Slack tokens
    r"|sk-[A-Za-z0-9_-]{16,}"  # LLM API keys
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)

needs_git = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")


def _ignored(rel: str) -> bool:
    return (
        subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", rel], check=False).returncode == 0
    )


@needs_git
@pytest.mark.parametrize(
    "name",
    [
        "slack_webhook_url_critical",
        "slack_webhook_url_ai",
        "llm_api_key",
        "grafana_admin_password",
        "exporter-password",
        "server.key",
        "web.yml",
        ".env",
        "nested/anything",
        "slack_webhook_url.example.bak",
    ],
)
def test_a_real_secret_file_in_secrets_is_ignored_by_git(name: str) -> None:
    assert _ignored(f"secrets/{name}"), f"secrets/{name} could be committed"


@needs_git
def test_only_the_examples_are_committable() -> None:
    assert not _ignored("secrets/slack_webhook_url_critical.example")
    assert not _ignored("secrets/.gitignore")
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "secrets"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked and all(p == "secrets/.gitignore" or p.endswith(".example") for p in tracked), tracked


def test_every_compose_secret_has_an_example_and_no_example_holds_a_real_secret() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, spec in compose["secrets"].items():
        example = ROOT / (spec["file"] + ".example")
        assert example.is_file(), f"{name}: no {example.name}"
    for example in SECRETS.glob("*.example"):
        assert not REAL_LOOKING.search(example.read_text()), f"{example} looks like a real secret"
    assert REAL_LOOKING.search("https://hooks.slack.com/services/T0123ABCD/B0123ABCD/abcdefghijklmnopqrstuvwx")


def test_alert_links_come_from_the_links_file(tmp_path: Path) -> None:
    links = tmp_path / "links.yml"
    links.write_text(
        "runbook_base_url: https://wiki.example.org/fr/runbook\ngrafana_url: https://grafana.example.org/\n"
    )
    out = tmp_path / "out"
    assert generate(["--out", str(out), "--links", str(links)]) == 0
    text = (out / "prometheus/rules/fr-exporter.alerts.yml").read_text()
    rules = [r for g in yaml.safe_load(text)["groups"] for r in g["rules"] if "alert" in r]
    assert rules
    for r in rules:
        assert r["annotations"]["runbook_url"] == f"https://wiki.example.org/fr/runbook#{r['alert'].lower()}"
        assert r["annotations"]["dashboard_url"].startswith("https://grafana.example.org/d/")
    assert "localhost:3000" not in text


def test_the_shipped_rules_use_the_shipped_links() -> None:
    links = load_links(LINKS_FILE)
    text = (ROOT / "prometheus/rules/fr-exporter.alerts.yml").read_text()
    for r in (r for g in yaml.safe_load(text)["groups"] for r in g["rules"] if "alert" in r):
        assert r["annotations"]["runbook_url"].startswith(links["runbook_base_url"] + "#")
        assert r["annotations"]["dashboard_url"].startswith(links["grafana_url"] + "/d/")


@pytest.mark.parametrize(
    ("text", "needle"),
    [("grafana: http://x\n", "unknown key"), ("grafana_url: localhost:3000\n", "http(s) URL")],
)
def test_a_bad_links_file_is_a_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "links.yml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(needle)):
        load_links(path)
