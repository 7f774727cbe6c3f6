"""The run's assemblers: each video's chunk rows gathered into a whole video, the videos
partitioned by id across a few actors, so that no one process has to take every row.

The driver passes block references (no data) round robin to `count` AssemblerActors. Each
turns its blocks into ChunkRows, keeps the rows of the videos it owns (`owner`: a hash of
the video id), hands the others to their owners, gathers each video in a VideoAssembler and
starts its finalize task on the node that cached the source. The driver gets back News per
call: videos started, finalize results (videos/ rows) and videos lost, for its tally, the
listing pacer, the shard roller and the compactor. With one assembler the same class runs
in the driver's process (InProcessFeeder). Why, and what each path takes:
docs/decisions.md and `benchmarks.scale` (assembler table).

The actors reserve no CPU and live on the driver's node, like the pacer: a worker node that
dies loses none of the videos in assembly.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from dataclasses import dataclass, field

from operators.assemble import MAX_BYTES, MAX_VIDEOS, VideoAssembler
from operators.chunk_row import ChunkRow
from operators.finalize import finalize_video

log = logging.getLogger("framesift")

CPUS_PER_ASSEMBLER = 64  # cluster CPUs one assembler actor keeps up with (docs/decisions.md)
MAX_ASSEMBLERS = 32
BATCH_REFS = 32  # block references one call to an assembler takes at most
LOGGED = 20  # videos never completed that an assembler names in the log; the rest are counted


def owner(video_id: str, count: int) -> int:
    """The assembler (0 .. count-1) that gathers `video_id`'s rows: the same in every process."""
    return zlib.crc32(video_id.encode()) % count if count > 1 else 0


def assembler_count(requested: int, cluster_cpus: float) -> int:
    """`requested` actors (--assemblers N), or for 0 one per CPUS_PER_ASSEMBLER cluster CPUs,
    between 1 and MAX_ASSEMBLERS."""
    if requested > 0:
        return requested
    return max(1, min(MAX_ASSEMBLERS, int(cluster_cpus) // CPUS_PER_ASSEMBLER))


def finalize_here(payload, settings) -> tuple[dict, str]:
    """`finalize_video`, and the node it ran on (for the report's placement counts)."""
    from operators.source_cache import current_node_id

    return finalize_video(payload, settings), current_node_id()


def finalize_placement(payload) -> dict:
    """Ray options that run a video's finalize on the node that decoded it, which holds the
    source it downloaded (soft: anywhere else when that node is gone)."""
    if not payload.node_id:
        return {}
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(payload.node_id, soft=True)}


@dataclass
class News:
    """What an assembler has to tell the driver since it last told it."""

    started: int = 0  # videos whose first chunk arrived
    split_videos: int = 0  # of those, decoded in spans (--segment-s)
    span_tasks: int = 0
    committed: list = field(default_factory=list)  # (videos/ row, source node, node finalize ran on)
    lost: list = field(default_factory=list)  # (video_id, source_uri, why): finalize never returned


@dataclass
class AssemblyStats:
    """How full the assemblers got, summed over them, and what they dropped or gave up."""

    peak_videos: int = 0
    peak_bytes: int = 0
    duplicate_rows: int = 0
    given_up: int = 0
    never_completed: int = 0
    forwarded_rows: int = 0  # rows an actor handed to the video's owner

    def add(self, other: AssemblyStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class AssemblerActor:
    """One of a run's `count` assembler actors (an asyncio actor: the rows other actors hand
    it are taken between its own, never at once). `settings` is a one-element list holding
    the ObjectRef of the run's FinalizeSettings; at most `max_inflight` of its videos are in
    finalize at once, which holds back the blocks it is given."""

    def __init__(self, index: int, count: int, settings: list, finalize_options: dict, max_inflight: int,
                 max_videos: int = MAX_VIDEOS, max_bytes: int = MAX_BYTES) -> None:
        import ray

        self.index, self.count = index, count
        self.assembler = VideoAssembler(max_videos=max(1, max_videos // count), max_bytes=max(1, max_bytes // count))
        self.settings = settings[0]
        self.finalize = ray.remote(max_retries=2, **finalize_options)(finalize_here)
        self.max_inflight = max(1, max_inflight)
        self.peers: list = []
        self.forwarded = 0
        self._news = News()
        self._given_up_seen = 0
        self._inflight: dict = {}  # asyncio future of a finalize -> (video_id, source_uri, source node)

    async def bind(self, peers: list) -> None:
        """The run's actors, in order (this one among them). Imports Ray Data's block
        reader now, while the dataset starts, not on the first block."""
        from ray.data.block import BlockAccessor  # noqa: F401

        self.peers = peers

    async def add_blocks(self, *blocks) -> News:
        """Take Ray Data blocks of chunk rows (passed as ObjectRefs, which Ray fetches
        together before the call): keep this actor's videos' rows, hand the others to their
        owners and wait until they have them; returns the News since the last answer."""
        from ray.data.block import BlockAccessor

        mine: list[ChunkRow] = []
        theirs: dict[int, list[ChunkRow]] = {}
        for block in blocks:
            for r in BlockAccessor.for_block(block).iter_rows(public_row_format=True):
                row = ChunkRow.from_row(r)
                o = owner(row.video_id, self.count)
                (mine if o == self.index else theirs.setdefault(o, [])).append(row)
        sent = [self.peers[o].add_rows.remote(rows) for o, rows in theirs.items()]
        self.forwarded += sum(len(rows) for rows in theirs.values())
        await self.add_rows(mine)
        if sent:
            await asyncio.gather(*sent)
        return self._take_news()

    async def add_rows(self, rows: list[ChunkRow]) -> None:
        """Gather rows of this actor's videos; start the finalize of each video completed."""
        a = self.assembler
        for row in rows:
            seen_twice = a.duplicates
            payload = a.add(row)
            if row.chunk_index == 0 and a.duplicates == seen_twice:  # a video's first row
                self._news.started += 1
                if row.spans > 1:
                    self._news.split_videos += 1
                    self._news.span_tasks += row.spans
            for vid, uri in a.given_up[self._given_up_seen:]:
                log.error("gave up %s (%s): its chunks stopped arriving; not committed, a re-run "
                          "processes it", vid, uri)
            self._given_up_seen = len(a.given_up)
            if payload is not None:
                ref = self.finalize.options(**finalize_placement(payload)).remote(payload, self.settings)
                meta = payload.meta
                self._inflight[asyncio.wrap_future(ref.future())] = (meta["video_id"], meta["source_uri"],
                                                                       payload.node_id)
                await self._drain(self.max_inflight)
        self._settle_done()

    async def _drain(self, limit: int) -> None:
        while len(self._inflight) > limit:
            done, _ = await asyncio.wait(list(self._inflight), return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                self._settle(fut)

    def _settle_done(self) -> None:
        for fut in [f for f in self._inflight if f.done()]:
            self._settle(fut)

    def _settle(self, fut) -> None:
        if fut not in self._inflight:  # settled by another coroutine waiting on it too
            return
        vid, uri, node = self._inflight.pop(fut)
        try:
            row, ran_on = fut.result()
        except Exception as exc:  # noqa: BLE001 - the task's node died past its retries, or it raised
            self._news.lost.append((vid, uri, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            return
        self._news.committed.append((row, node, ran_on))

    def _take_news(self) -> News:
        news, self._news = self._news, News()
        return news

    async def news(self) -> News:
        """The News since the last answer, without waiting for anything."""
        self._settle_done()
        return self._take_news()

    async def finish(self) -> tuple[News, AssemblyStats]:
        """After the last block: wait for every finalize; the last News and the stats. A
        video still missing chunks is logged (not committed: a re-run processes it)."""
        await self._drain(0)
        pending = self.assembler.pending_videos()
        for vid, uri in pending[:LOGGED]:
            log.error("%s (%s) never received all its chunks; not committed, a re-run processes it", vid, uri)
        if len(pending) > LOGGED:
            log.error("... and %d more videos that never received all their chunks", len(pending) - LOGGED)
        return self._take_news(), self._stats()

    async def stats(self) -> AssemblyStats:
        """This actor's AssemblyStats so far."""
        return self._stats()

    def _stats(self) -> AssemblyStats:
        a = self.assembler
        return AssemblyStats(peak_videos=a.peak_videos, peak_bytes=a.peak_bytes, duplicate_rows=a.duplicates,
                             given_up=len(a.given_up), never_completed=a.pending, forwarded_rows=self.forwarded)


def start_assemblers(ray, count: int, settings_ref, finalize_options: dict, max_inflight_videos: int) -> list:
    """`count` AssemblerActors on the driver's node, bound to each other; the videos in
    finalize at once (`max_inflight_videos`) are shared out between them."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    per_actor = -(-max_inflight_videos // count)
    cls = ray.remote(num_cpus=0, scheduling_strategy=here)(AssemblerActor)
    actors = [cls.remote(i, count, [settings_ref], finalize_options, per_actor) for i in range(count)]
    for a in actors:  # not waited for: the actors start while the dataset does (calls run in order)
        a.bind.remote(actors)
    return actors


class BlockFeeder:
    """The driver's side: hands block references round robin to the assemblers, one call
    in flight per actor; the references that come while an actor is busy go with its next
    call (at most BATCH_REFS a call), so calls grow with the load instead of their number.
    Each News answered goes to `absorb`."""

    def __init__(self, ray, actors: list, absorb) -> None:
        self.ray, self.actors, self.absorb = ray, actors, absorb
        self._waiting: list[list] = [[] for _ in actors]  # per actor: refs for its next call
        self._calls: dict = {}  # call ObjectRef -> actor index
        self._busy: set[int] = set()
        self._turn = 0

    def _send(self, i: int) -> None:
        refs, self._waiting[i] = self._waiting[i][:BATCH_REFS], self._waiting[i][BATCH_REFS:]
        self._calls[self.actors[i].add_blocks.remote(*refs)] = i
        self._busy.add(i)

    def _answered(self, timeout: float | None) -> None:
        """Take every answered call, after waiting up to `timeout` for the first."""
        ready, _ = self.ray.wait(list(self._calls), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self.ray.wait(list(self._calls), num_returns=len(self._calls), timeout=0)
            for call in ready:
                i = self._calls.pop(call)
                self._busy.discard(i)
                self.absorb(self.ray.get(call))
                if self._waiting[i]:
                    self._send(i)

    def feed(self, block_ref) -> None:
        """Hand one block on; waits while every actor has a full call waiting."""
        i = self._turn % len(self.actors)
        self._turn += 1
        self._waiting[i].append(block_ref)
        if i not in self._busy:
            self._send(i)
        elif self._calls:
            self._answered(timeout=0)
        while self._calls and sum(len(w) for w in self._waiting) >= BATCH_REFS * len(self.actors):
            self._answered(timeout=None)

    def finish(self) -> AssemblyStats:
        """After the last block: every answer, then each actor's last News; the summed stats."""
        for i, waiting in enumerate(self._waiting):
            if waiting and i not in self._busy:
                self._send(i)
        while self._calls:
            self._answered(timeout=None)
        stats = AssemblyStats()
        for news, s in self.ray.get([a.finish.remote() for a in self.actors]):
            self.absorb(news)
            stats.add(s)
        return stats

    def interrupted(self, timeout: float = 10.0) -> AssemblyStats:
        """After an interruption: the News and stats the actors can still give (best effort)."""
        stats = AssemblyStats()
        try:
            for news in self.ray.get([a.news.remote() for a in self.actors], timeout=timeout):
                self.absorb(news)
            for s in self.ray.get([a.stats.remote() for a in self.actors], timeout=timeout):
                stats.add(s)
        except Exception:  # noqa: BLE001 - a report without them, not no report
            pass
        return stats


class InProcessFeeder:
    """A run's one assembler (`--assemblers` 1, the default below 128 cluster CPUs) in the
    driver's own process: the same AssemblerActor, run on an event loop of the driver's,
    with BlockFeeder's feed / finish / interrupted. An actor would cost the run a process
    that imports Ray Data and a hop per block, for nothing to share the work with
    (docs/decisions.md)."""

    def __init__(self, ray, settings_ref, finalize_options: dict, max_inflight_videos: int, absorb) -> None:
        self.ray, self.absorb = ray, absorb
        self.assembler = AssemblerActor(0, 1, [settings_ref], finalize_options, max_inflight_videos)
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self.assembler.bind([self.assembler]))

    def feed(self, block_ref) -> None:
        """Gather one block's rows now."""
        self.absorb(self._loop.run_until_complete(self.assembler.add_blocks(self.ray.get(block_ref))))

    def finish(self) -> AssemblyStats:
        """After the last block: wait for every finalize; the stats."""
        news, stats = self._loop.run_until_complete(self.assembler.finish())
        self.absorb(news)
        self._loop.close()
        return stats

    def interrupted(self) -> AssemblyStats:
        """After an interruption: the News and stats so far (best effort)."""
        try:
            self.absorb(self._loop.run_until_complete(self.assembler.news()))
        except Exception:  # noqa: BLE001 - a report without them, not no report
            pass
        return self.assembler._stats()


def assembly_feeder(ray, count: int, settings_ref, finalize_options: dict, max_inflight_videos: int, absorb):
    """The run's assembly: `count` AssemblerActors fed by a BlockFeeder, or for 1 the
    InProcessFeeder; returns (feeder, actors to end after the run)."""
    if count == 1:
        return InProcessFeeder(ray, settings_ref, finalize_options, max_inflight_videos, absorb), []
    actors = start_assemblers(ray, count, settings_ref, finalize_options, max_inflight_videos)
    return BlockFeeder(ray, actors, absorb), actors
