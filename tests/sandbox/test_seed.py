"""The seed: the default company loads, bad seeds fail with the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controlroom.sandbox import SeedError, load_seed
from controlroom.sandbox.seed import parse_seed

from .conftest import make_sandbox


def test_default_seed_is_a_believable_company() -> None:
    seed = load_seed()
    team = seed.teams[0]
    titles = {u.title for u in team.users}
    assert {
        "Customer Support Agent",
        "Tier-2 Support Lead",
        "Account Manager",
        "Release Manager",
    } <= titles
    assert {c.name for c in team.channels} >= {
        "support",
        "releases",
        "deploys",
        "proj-aurora",
        "leadership-digest",
    }
    assert next(c for c in team.channels if c.name == "leadership-digest").is_private
    assert "tier2-oncall" in {g.handle for g in team.usergroups}
    assert {"chat:write", "channels:read", "groups:write"} <= set(seed.app.bot_scopes)
    assert len(seed.teams) == 2


def test_sandbox_lookups_by_name_id_and_email() -> None:
    sb = make_sandbox()
    assert sb.user("marcus").title == "Tier-2 Support Lead"
    assert sb.user("U0T2LEAD01").name == "marcus"
    assert sb.user("sofia@northwind.example").real_name == "Sofia Alvarez"
    assert sb.channel("#support").id == sb.channel("C0SUPPORT1").id
    assert sb.bot_user_id in sb.channel("leadership-digest").members


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def base() -> dict[str, object]:
    return yaml.safe_load(
        """
app: {app_id: A1TEST, name: T, client_id: "1.2", bot_scopes: [chat:write]}
teams:
  - id: T1TEST
    name: Test
    domain: test
    bot: {user_id: U1BOT, bot_id: B1BOT}
    users: [{id: U1ALICE, name: alice, real_name: Alice, email: alice@test.example}]
    channels: [{id: C1GEN, name: general, members: [alice]}]
"""
    )


def test_custom_seed_file_loads(tmp_path: Path) -> None:
    sb = make_sandbox(seed_path=write(tmp_path, base()))
    assert sb.team_id == "T1TEST" and sb.user("alice").id == "U1ALICE"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["teams"][0]["channels"][0].update(name="Bad Name"), "teams.0.channels.0.name"),
        (lambda d: d["teams"][0]["channels"][0].update(members=["bob"]), "unknown user 'bob'"),
        (lambda d: d["app"].update(bot_scopes=["not a scope"]), "app.bot_scopes"),
        (lambda d: d["teams"][0]["users"][0].update(email="nope"), "teams.0.users.0.email"),
        (lambda d: d["teams"][0].update(surprise=1), "teams.0.surprise"),
        (lambda d: d.pop("app"), "app"),
    ],
)
def test_invalid_seeds_name_the_problem(mutate: object, message: str) -> None:
    data = base()
    mutate(data)  # type: ignore[operator]
    with pytest.raises(SeedError) as info:
        parse_seed(data, "seed.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("seed.yaml: invalid seed")


def test_unreadable_or_non_yaml_seed(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match="cannot read seed"):
        load_seed(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("app: [unclosed")
    with pytest.raises(SeedError, match="not valid YAML"):
        load_seed(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(SeedError, match="must be a mapping"):
        load_seed(listy)


def test_demo_seed_has_history_without_sending_events() -> None:
    sb = make_sandbox(seed_path="demo", request_url="http://127.0.0.1:9/x")
    aurora = sb.state.messages("proj-aurora")
    assert aurora[0]["text"].startswith("Decision:")
    assert aurora[1]["reply_count"] == 3
    assert aurora[0]["reactions"][0]["count"] == 3
    assert [m["ts"] for m in aurora] == sorted(m["ts"] for m in aurora)
    assert sb.deliveries == [] and sb.deliverer.emitted == []
    assert make_sandbox().state.messages("proj-aurora") == []  # the default stays empty


def test_seed_history_must_name_known_users() -> None:
    data = base()
    data["teams"][0]["channels"][0]["history"] = [{"user": "mallory", "text": "hi"}]  # type: ignore[index]
    with pytest.raises(SeedError, match="unknown user 'mallory'"):
        parse_seed(data, "seed.yaml")
