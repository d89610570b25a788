"""Jobs end to end: the fake Gmail over real HTTP, real Redis and PostgreSQL."""

from __future__ import annotations

from .harness import Harness


async def test_500_message_job_end_to_end(harness: Harness) -> None:
    harness.add_user(500)
    job = await harness.run_job(max_results=500)

    assert job["status"] == "completed", job
    assert (job["total"], job["progress"], job["fetched"], job["cached"]) == (500, 500, 500, 0)
    assert job["attempts"] == 1
    assert job["sync_mode"] == "full"
    cached = harness.cached()
    mailbox = harness.fake.mailbox("alice@example.com")
    assert set(cached) == set(mailbox.messages)
    some = cached[next(iter(cached))]
    assert set(some["headers"]) == {"From", "To", "Subject", "Date"}
    assert some["history_id"] == mailbox.messages[some["message_id"]].history_id
    counts = harness.fake.counts
    assert counts["batch"] == 10
    assert counts["messages.get"] == 500
    assert counts["http"] <= 15, counts

    events = await harness.events(job["id"])
    types = [t for t, _ in events]
    assert types[-1] == "gmail.job.completed"
    assert types.count("gmail.job.completed") == 1
    assert set(types[:-1]) == {"gmail.job.progressed"}
    progress = [p["progress"] for _, p in events]
    assert progress == sorted(progress), "progress events out of order"
    batch_steps = [p["current_step"] for _, p in events if p["current_step"].startswith("Fetched")]
    assert batch_steps == [f"Fetched batch {i}/10" for i in range(1, 11)]
    done = events[-1][1]
    assert (done["progress"], done["total"], done["fetched"], done["cached"]) == (500, 500, 500, 0)
    assert done["cache_hit_rate"] == 0.0


async def test_second_job_on_unchanged_mailbox_makes_no_message_gets(harness: Harness) -> None:
    harness.add_user(500)
    await harness.run_job()
    harness.fake.reset_counts()

    job = await harness.run_job()

    assert job["status"] == "completed"
    assert job["sync_mode"] == "incremental"
    assert (job["total"], job["fetched"], job["cached"]) == (500, 0, 500)
    assert job["cache_hit_rate"] == 1.0
    counts = harness.fake.counts
    assert counts["messages.get"] == 0
    assert counts["batch"] == 0
    assert counts["history.list"] == 1
    assert counts["http"] <= 2, counts


async def test_mailbox_changes_are_fetched_through_history(harness: Harness) -> None:
    harness.add_user(200)
    await harness.run_job(max_results=200)
    mailbox = harness.fake.mailbox("alice@example.com")
    old = list(mailbox.messages)
    added = [m.id for m in mailbox.generate(7)]
    for gone in old[:2]:
        mailbox.delete_message(gone)
    mailbox.change_labels(old[5], add=["STARRED"], remove=[])
    harness.fake.reset_counts()

    job = await harness.run_job(max_results=200)

    assert job["status"] == "completed"
    assert job["sync_mode"] == "incremental"
    assert sorted(harness.fake.fetched_ids) == sorted([*added, old[5]])
    assert harness.fake.counts["messages.list"] == 0
    cached = harness.cached()
    assert set(cached) == set(mailbox.messages)
    assert "STARRED" in cached[old[5]]["label_ids"]
    assert job["fetched"] == 8
    assert job["total"] == 200

    harness.fake.reset_counts()
    await harness.run_job(max_results=200)
    assert harness.fake.counts["messages.get"] == 0


async def test_history_404_falls_back_to_a_full_sync(harness: Harness) -> None:
    harness.add_user(120)
    await harness.run_job(max_results=120)
    mailbox = harness.fake.mailbox("alice@example.com")
    added = [m.id for m in mailbox.generate(3)]
    mailbox.expire_history()
    harness.fake.reset_counts()

    job = await harness.run_job(max_results=120)

    assert job["status"] == "completed"
    assert job["sync_mode"] == "full"
    counts = harness.fake.counts
    assert counts["history.list"] == 1
    assert counts["messages.list"] == 1
    assert sorted(harness.fake.fetched_ids) == sorted(added)
    assert (job["total"], job["fetched"], job["cached"]) == (120, 3, 117)
    steps = [p["current_step"] for _, p in await harness.events(job["id"])]
    assert "History too old; full sync" in steps

    harness.fake.reset_counts()
    job = await harness.run_job(max_results=120)
    assert job["sync_mode"] == "incremental"
    assert harness.fake.counts["messages.get"] == 0


async def test_a_job_asking_for_more_than_was_synced_does_a_full_sync(harness: Harness) -> None:
    harness.add_user(300)
    await harness.run_job(max_results=100)
    harness.fake.reset_counts()

    job = await harness.run_job(max_results=300)

    assert job["sync_mode"] == "full"
    assert (job["total"], job["fetched"], job["cached"]) == (300, 200, 100)
    assert harness.fake.counts["messages.get"] == 200
