"""DecodeAttempts, the run's ledger of decode starts per video, without Ray."""

from __future__ import annotations

from operators.attempts import MAX_ATTEMPTS, DecodeAttempts, killed_reason


def test_a_video_counts_its_starts_and_the_rows_an_attempt_could_yield():
    a = DecodeAttempts()
    assert a.start("v") == (0, 0)
    a.expect("v", 5)
    assert a.start("v") == (1, 5)  # started again: the first attempt died
    a.expect("v", 3)  # a smaller promise does not lower what a dead attempt may have yielded
    assert a.start("v") == (2, 5)
    assert a.start("w") == (0, 0)  # videos are counted apart


def test_the_ledger_keeps_only_the_most_recent_ids():
    a = DecodeAttempts(capacity=2)
    a.start("old")
    a.start("b")
    a.start("b")  # b is now the most recent
    a.start("c")  # pushes out "old", the least recent
    assert a.start("b") == (2, 0)
    assert a.start("old") == (0, 0)
    a.expect("gone", 4)  # an id not (or no longer) in the ledger: nothing recorded
    assert a.start("gone") == (0, 0)


def test_the_reason_is_one_sentence_with_the_count():
    reason = killed_reason(MAX_ATTEMPTS)
    assert str(MAX_ATTEMPTS) in reason and reason.count(".") <= 1 and "\n" not in reason
