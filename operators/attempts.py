"""How often a video's decode has started in this run: a video that kills its decoder
becomes a failed video, not a failed run.

A decode task whose worker dies (the kernel's or Ray's out-of-memory killer on a huge
frame, a decoder crash) is run again by Ray, and again, until the task's retries are spent
and the whole run fails. So each decode task first asks `DecodeAttempts` (one small actor
per run, on the driver's node) how many times its video has started before. Past
`max_attempts`, the task records the video as failed with the reason instead of decoding
it: the run goes on, the video has a `failed` row (`--retry-failed` tries it again).

A dead attempt may have yielded some of the video's chunk rows, and Ray passes on only
the outputs of a task's new attempt past those its dead one yielded: so each attempt also
records how many rows it can yield (`expect`, from the probe), and the refusing attempt
yields its failed row more often than that.

One run's videos in flight are bounded by the listing's pacing, so the ledger keeps only
the most recent `capacity` ids: its memory does not grow with the corpus.
"""

from __future__ import annotations

from collections import OrderedDict

MAX_ATTEMPTS = 2  # decodes of one video that may die; the next start records it as failed
CAPACITY = 200_000  # ids remembered (>> the videos in flight at once)


def killed_reason(attempts: int) -> str:
    """The failed row's one-sentence reason after `attempts` decodes died."""
    return (f"its decode was killed {attempts} times before finishing (out of memory, a decoder crash or "
            f"a lost node); not tried again in this run")


class DecodeAttempts:
    """Counts decode starts per video id (the most recent `capacity` ids). Plain Python,
    run as a Ray actor by the job; tested without Ray."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._starts: OrderedDict[str, list[int]] = OrderedDict()  # id -> [starts, rows it can yield]

    def start(self, video_id: str) -> tuple[int, int]:
        """Record that `video_id`'s decode starts; returns how many times it started before
        in this run (0 the first time: a task starts again only after its worker died) and
        the most rows an earlier attempt said it could yield (0: none said)."""
        entry = self._starts.pop(video_id, [0, 0])
        before = entry[0]
        entry[0] += 1
        self._starts[video_id] = entry
        while len(self._starts) > self.capacity:
            self._starts.popitem(last=False)
        return before, entry[1]

    def expect(self, video_id: str, rows: int) -> None:
        """Record that this attempt at `video_id` yields at most `rows` rows."""
        entry = self._starts.get(video_id)
        if entry is not None:
            entry[1] = max(entry[1], rows)
