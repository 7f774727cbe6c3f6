"""What a stage asks Ray for, and the cluster facts stages size themselves from.

Each stage declares its own `Resources` from a `ClusterShape` (as NeMo Curator's stages
declare theirs): `DecodeStage.resources`, `EmbedStage.resources`, `finalize_resources`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resources:
    """One task's or actor's request: CPUs (fractions allowed), GPUs, memory in bytes."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int | None = None

    def ray_options(self) -> dict:
        """As keyword arguments of `ray.remote` / `map_batches`."""
        out: dict = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory is not None:
            out["memory"] = self.memory
        return out


@dataclass(frozen=True)
class ClusterShape:
    """The facts stages are sized from: the CPUs of the largest node (an actor and the
    decode tasks beside it share one node), the cluster's GPUs, and whether the embedding
    actors run on GPUs (`embed_device` auto: when there are GPUs at start)."""

    node_cpus: int
    gpus: int = 0
    embed_on_gpu: bool = False

    @classmethod
    def of(cls, node_cpus: int, gpus: int, embed_device: str = "auto") -> ClusterShape:
        """The shape for `embed_device` "auto", "gpu" or "cpu"."""
        on_gpu = embed_device == "gpu" or (embed_device == "auto" and gpus > 0)
        return cls(max(1, int(node_cpus)), int(gpus), on_gpu)


def largest_node_cpus(nodes: list[dict]) -> int:
    """The most CPUs any one alive node of `nodes` (entries of `ray.nodes()`) has, 0 when
    none reports any. An actor asking for a multi-node cluster's total could never be placed."""
    return max((int(n.get("Resources", {}).get("CPU", 0)) for n in nodes if n.get("Alive")), default=0)


def cluster_shape(ray, embed_device: str = "auto") -> ClusterShape:
    """The shape of the cluster `ray` is connected to."""
    resources = ray.cluster_resources()
    cpus = largest_node_cpus(ray.nodes()) or int(resources.get("CPU", 1))
    return ClusterShape.of(cpus, int(resources.get("GPU", 0)), embed_device)
