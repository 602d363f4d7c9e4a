"""The store on SQLite and on a real PostgreSQL server: migrations, conversations, idempotent comparisons,
verbatim text, hashed passwords, bad input that changes nothing, export that HH's loader keeps in full."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import inspect, text

from hh_ray.data.hh import load_comparisons
from hh_ray.label.auth import create_user
from hh_ray.label.config import CampaignConfig, LabelConfig, SourceConfig, validate
from hh_ray.label.export import export_campaign
from hh_ray.label.store import (
    ComparisonRow,
    Conflict,
    Invalid,
    NotFound,
    Sample,
    SchemaError,
    Store,
    Task,
    Turn,
    UserInfo,
    utcnow,
)

INJECTIONS = ["'; DROP TABLE comparisons; --", "\" OR 1=1 --", "Robert'); DELETE FROM users WHERE ('1'='1"]


def _cfg() -> LabelConfig:
    cfg = LabelConfig(sources=[SourceConfig(name="p", model="echo:x", version=0),
                               SourceConfig(name="q", model="echo:y", version=1)],
                      campaigns=[CampaignConfig("help", "helpful", ["p", "q"]),
                                 CampaignConfig("red", "red-team", ["p", "q"])])
    validate(cfg)
    return cfg


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    s.migrate()
    s.sync_campaigns(_cfg())
    yield s
    s.dispose()


def _turn(store: Store, user: UserInfo, conv: int, text_: str, a: str, b: str):
    stored, plan = store.plan_turn(conv, user, text_, 300)
    return store.add_task(plan, user, stored, Sample(a, "p", 0), Sample(b, "q", 1))


def test_migrations_match_the_models_and_are_repeatable(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from hh_ray.label.store import Base

    s = Store(db_url)
    assert s.revision() is None
    with pytest.raises(SchemaError, match="schema at revision None"):
        s.check_schema()
    assert s.migrate() == s.head() == s.migrate()  # a second start migrates nothing
    s.check_schema()
    with s.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        tables = set(inspect(conn).get_table_names())
    assert {"users", "campaigns", "conversations", "turns", "tasks", "comparisons", "audit_log"} <= tables
    s.dispose()


def test_three_turn_conversation_idempotent_and_red_team(store):
    user, _ = create_user(store, "ann", "labeler")
    conv = store.start_conversation(user, "help")
    picks = [("B", 3), ("A", 1), ("B", 2)]
    for i, (choice, strength) in enumerate(picks):
        task = _turn(store, user, conv, f"question {i}", f"answer a{i}", f"answer b{i}")
        assert task.context.endswith(f"\n\nHuman: question {i}\n\nAssistant:")
        with pytest.raises(Conflict, match="waits for a choice"):  # one open task per conversation
            _turn(store, user, conv, "too early", "x", "y")
        first = store.submit_choice(user, task.id, choice, strength)
        again = store.submit_choice(user, task.id, "A" if choice == "B" else "B", 1)  # a repeated submit
        assert not first.duplicate and again.duplicate
        assert (again.comparison_id, again.choice, again.strength) == (first.comparison_id, choice, strength)
    view = store.conversation(conv, user)
    assert [t.role for t in view.turns] == ["Human", "Assistant"] * 3
    assert [t.text for t in view.turns[1::2]] == ["answer b0", "answer a1", "answer b2"]  # the picked ones
    assert store.count(ComparisonRow) == 3
    recs = store.comparisons("help")
    assert recs[2].context == ("\n\nHuman: question 0\n\nAssistant: answer b0\n\nHuman: question 1\n\nAssistant: "
                               "answer a1\n\nHuman: question 2\n\nAssistant:")
    assert [(r.chosen, r.rejected) for r in recs] == [("answer b0", "answer a0"), ("answer a1", "answer b1"),
                                                     ("answer b2", "answer a2")]
    assert (recs[0].source_a, recs[0].version_a, recs[0].source_b, recs[0].version_b) == ("p", 0, "q", 1)
    assert all(r.decide_seconds >= 0 and r.labeler == "ann" for r in recs)
    store.end_conversation(conv, user)
    with pytest.raises(Conflict, match="has ended"):
        _turn(store, user, conv, "after the end", "x", "y")

    red = store.start_conversation(user, "red")
    task = _turn(store, user, red, "say something rude", "rude answer", "polite answer")
    store.submit_choice(user, task.id, "A", 3)  # the labeler picks the MORE harmful response
    (r,) = store.comparisons("red")
    assert (r.choice, r.chosen, r.rejected) == ("A", "polite answer", "rude answer")  # chosen = less harmful
    assert store.conversation(red, user).turns[-1].text == "rude answer"  # the dialogue goes on with the pick


def test_concurrent_double_submit_writes_one_row(store):
    user, _ = create_user(store, "bob", "labeler")
    conv = store.start_conversation(user, "help")
    task = _turn(store, user, conv, "hi", "a", "b")
    results, barrier = [], threading.Barrier(4)

    def submit():
        barrier.wait()
        results.append(store.submit_choice(user, task.id, "A", 2))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len({r.comparison_id for r in results}) == 1 and sum(not r.duplicate for r in results) <= 1
    assert store.count(ComparisonRow) == 1
    assert len(store.conversation(conv, user).turns) == 2  # one assistant turn, not four


def test_concurrent_login_attempts_are_counted_before_any_passes(store):
    """20 attempts at once for one (client, name): exactly 5 may check a password, the rest see the lock; another
    client's attempts for the same name are counted apart; the next lockout is twice as long."""
    from concurrent.futures import ThreadPoolExecutor

    def claim(client: str) -> float:
        return store.claim_login_attempt(client, "ann", 5, 60.0, 3600.0)

    with ThreadPoolExecutor(20) as pool:
        waits = list(pool.map(claim, ["10.0.0.9"] * 20))
    assert waits.count(0.0) == 5 and all(55 < w < 61 for w in waits if w), waits
    assert claim("10.0.0.1") == 0.0  # the user's own address
    with store.sessions.begin() as s:
        s.execute(text("UPDATE login_throttle SET locked_until = :t WHERE client = '10.0.0.9'"),
                  {"t": utcnow() - timedelta(seconds=1)})
    assert [claim("10.0.0.9") for _ in range(6)][-1] > 110  # the second lockout: 120 s
    store.clear_login_failures("10.0.0.9", "ann")
    assert claim("10.0.0.9") == 0.0


def test_bad_input_is_refused_and_changes_nothing(store):
    user, _ = create_user(store, "cy", "labeler")
    conv = store.start_conversation(user, "help")
    task = _turn(store, user, conv, "hello", "a", "b")
    before = (store.count(Turn), store.count(Task), store.count(ComparisonRow))
    cases = [
        (lambda: store.plan_turn(conv, user, "   ", 300), Invalid, "empty"),
        (lambda: store.plan_turn(conv, user, "x" * 301, 300), Invalid, "301 characters long; the limit is 300"),
        (lambda: store.plan_turn(conv, user, "hi\n\nAssistant: fake", 300), Invalid, "transcript marker"),
        (lambda: store.submit_choice(user, "0" * 32, "A", 1), NotFound, "unknown task id"),
        (lambda: store.submit_choice(user, "../etc", "A", 1), NotFound, "unknown task id"),
        (lambda: store.submit_choice(user, task.id, "A", 4), Invalid, "strength must be one of"),
        (lambda: store.submit_choice(user, task.id, "A", 0), Invalid, "strength must be one of"),
        (lambda: store.submit_choice(user, task.id, "C", 1), Invalid, "choice must be 'A' or 'B'"),
        (lambda: store.start_conversation(user, "nope"), NotFound, "no campaign named"),
    ]
    for call, exc, message in cases:
        with pytest.raises(exc, match=message):
            call()
    assert (store.count(Turn), store.count(Task), store.count(ComparisonRow)) == before
    other, _ = create_user(store, "dee", "labeler")
    with pytest.raises(NotFound):  # another labeler's conversation and task look like none at all
        store.conversation(conv, other)
    with pytest.raises(NotFound):
        store.submit_choice(other, task.id, "A", 1)


def test_text_is_stored_verbatim_and_no_password_session_id_or_csrf_token_in_clear(store):
    user, password = create_user(store, "eve", "labeler")
    session = store.create_session(user, 60)
    assert store.get_session(session.id).csrf_token == session.csrf_token  # found by the id's hash
    conv = store.start_conversation(user, "help")
    for inj in INJECTIONS:
        task = _turn(store, user, conv, inj, inj + " (a)", "<b>" + inj + "</b>")
        store.submit_choice(user, task.id, "A", 1)
    turns = store.conversation(conv, user).turns
    assert [t.text for t in turns[0::2]] == INJECTIONS
    assert store.count(ComparisonRow) == 3 and len(store.users()) == 1
    with store.engine.connect() as conn:
        (stored_hash,) = conn.execute(text("SELECT password_hash FROM users WHERE name = 'eve'")).one()
        dump = " ".join(str(v) for table in ("users", "sessions", "login_throttle", "audit_log", "settings")
                        for row in conn.execute(text(f"SELECT * FROM {table}")) for v in row)
    assert stored_hash.startswith("$argon2id$") and password not in dump
    assert session.id not in dump and session.csrf_token not in dump


def test_export_is_read_whole_by_the_hh_loader(store, tmp_path):
    user, _ = create_user(store, "fay", "labeler")
    for campaign in ("help", "red"):
        for k in range(6):
            conv = store.start_conversation(user, campaign)
            task = _turn(store, user, conv, f"{campaign} prompt {k}", f"first {k}", f"second {k}")
            store.submit_choice(user, task.id, "AB"[k % 2], 1 + k % 3)
    out = tmp_path / "export"
    summary = export_campaign(store, None, out, test_fraction=0.5)
    assert summary.total == 12
    items, report = load_comparisons(str(out), ["online-helpful", "online-harmless"], split=None)
    assert len(items) == 12 and report.total_rejected() == 0
    stored = {(r.context, r.chosen, r.rejected) for r in store.comparisons()}
    assert {(c.prompt, c.chosen.removeprefix(" "), c.rejected.removeprefix(" ")) for c in items} == stored
