"""Data-parallel training: `spikescan train ... --ddp` under torchrun (one process per device).

    torchrun --nproc_per_node 2 -m spikescan train models/yinyang.snn --data yinyang --ddp

Every process builds the same network from the same seed (and, on --resume, from the checkpoint
that rank 0 reads and broadcasts). Each global batch is the one a single process would draw (the
same seeded shuffle); rank r simulates its rows r, r + world, ... (`GlobalBatchShard`), the
gradients are weighted by the shard's share of the global batch and summed across processes
(one all-reduce per step), so every process takes the same Adam step as one process would on the
whole batch, to float rounding. torch's DistributedSampler is not used: it reshuffles with its own
seed and pads the last batch with repeated samples, so its runs differ from a single process.
Validation and test are sharded the same way and their sums reduced. Rank 0 alone writes
checkpoints, metrics and plots, and prints. Backend: nccl on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import torch
from torch.utils.data import DataLoader


class Dist:
    """The process group as training sees it; `Dist()` is the single-process no-op."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0, active: bool = False, owns: bool = False):
        self.rank, self.world, self.local_rank, self.active = rank, world, local_rank, active
        self.owns = owns  # train() created the process group and destroys it at the end

    @property
    def main(self) -> bool:
        return self.rank == 0

    def _dev(self) -> torch.device:
        import torch.distributed as dist

        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over processes (float64)."""
        if not self.active:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self._dev())
        dist.all_reduce(t)
        return t.cpu().tolist()

    def all_true(self, flag: bool) -> bool:
        return bool(self.sum([0.0 if flag else 1.0])[0] == 0.0)

    def reduce_grads(self, net: torch.nn.Module, n_local: int) -> None:
        """grad <- (sum over processes of n_local * local grad) / (sum of n_local): the gradient
        of the mean loss over the global batch, in one all-reduce. A parameter with no gradient
        in any process keeps grad None (Adam then skips it, as in one process)."""
        if not self.active:
            return
        import torch.distributed as dist

        params = [p for p in net.parameters() if p.requires_grad]
        if not params:
            return
        dev, dt = params[0].device, params[0].dtype
        flat = [(p.grad.detach().reshape(-1).to(dt) * n_local) if p.grad is not None
                else torch.zeros(p.numel(), dtype=dt, device=dev) for p in params]
        tail = torch.tensor([float(p.grad is not None) for p in params] + [float(n_local)], dtype=dt, device=dev)
        buf = torch.cat(flat + [tail])
        dist.all_reduce(buf)
        n_global = max(float(buf[-1]), 1.0)
        off, flags = 0, buf[-len(params) - 1: -1].tolist()
        for p, flag in zip(params, flags):
            g = buf[off: off + p.numel()].view_as(p)
            off += p.numel()
            p.grad = (g / n_global).to(p.dtype) if flag > 0 else None

    def broadcast_state(self, net: torch.nn.Module) -> None:
        """Every parameter and buffer from rank 0 (the same seed gives the same init; this makes
        sure of it)."""
        if not self.active:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for t in list(net.parameters()) + list(net.buffers()):
                dist.broadcast(t.data, 0)

    def from_main(self, fn: Callable[[], Any]) -> Any:
        """fn() on rank 0, its result (or its exception) on every rank."""
        if not self.active:
            return fn()
        import torch.distributed as dist

        box: list[Any] = [None]
        if self.main:
            try:
                box[0] = ("ok", fn())
            except Exception as e:  # noqa: BLE001 - re-raised on every rank below
                box[0] = ("err", e)
        dist.broadcast_object_list(box, 0)
        kind, val = box[0]
        if kind == "err":
            raise val
        return val

    def reduce_cap(self, cap):
        """A spike_cap.CapStats of this process -> the counts of all processes (in place)."""
        if not self.active:
            return cap
        import torch.distributed as dist

        s = self.sum([cap.n, cap.truncated, cap.rerun])
        layers: list = [None] * self.world
        dist.all_gather_object(layers, sorted(cap.layers))
        cap.n, cap.truncated, cap.rerun = int(s[0]), int(s[1]), int(s[2])
        cap.layers = set().union(*[set(x) for x in layers])
        return cap

    def reduce_eval(self, res: dict) -> dict:
        """An evaluate() record of this shard -> the record of the whole split."""
        if not self.active:
            return res
        n = res["n"]
        s = self.sum([res["loss"] * n, round(res["accuracy"] * n), n, res["events"]])
        cap = self.reduce_cap(res["cap"])
        n = int(s[2])
        return {**res, "loss": s[0] / max(n, 1), "accuracy": s[1] / max(n, 1), "n": n, "events": int(s[3]),
                "cap": cap, **cap.record()}

    def reduce_rates(self, rates: Optional[dict], names: list[str]) -> Optional[dict]:
        if not self.active:
            return rates
        rates = rates or {}
        flat = [v for name in names for v in rates.get(name, [0.0, 0])]
        s = self.sum(flat)
        return {name: [s[2 * k], int(s[2 * k + 1])] for k, name in enumerate(names)}

    def close(self) -> None:
        if self.active and self.owns:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.active = False


def init(ddp: bool, device: Optional[str]) -> tuple[Dist, Optional[str]]:
    """(Dist, device spec). With ddp: joins the torchrun process group (env:// rendezvous),
    nccl on CUDA (device cuda:LOCAL_RANK), gloo on the CPU. ValueError outside torchrun."""
    if not ddp:
        return Dist(), device
    need = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if need:
        raise ValueError(f"--ddp runs under torchrun (missing {', '.join(need)}): torchrun --nproc_per_node N "
                         "-m spikescan train ... --ddp")
    import torch.distributed as dist

    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    spec = "auto" if device is None else str(device)
    cuda = spec.startswith("cuda") or (spec == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec} with --ddp: no CUDA GPU is visible here; use --device cpu")
        if ":" in spec:
            raise ValueError(f"--device {spec} with --ddp: pass --device cuda, each process takes cuda:LOCAL_RANK")
        spec = f"cuda:{local}"
        torch.cuda.set_device(local)
    else:
        spec = "cpu" if spec == "auto" else spec
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    return Dist(rank, world, local, active=True, owns=owns), spec


def check_splits(splits: dict, d: Dist) -> None:
    """--ddp splits every global batch: the splits must be Datasets, not ready-made DataLoaders."""
    if d.active:
        for name, x in splits.items():
            if isinstance(x, DataLoader):
                raise ValueError(f"--ddp: the {name} split is a DataLoader; pass a Dataset (or a built-in name) so "
                                 "each process can take its part of every batch")


class GlobalBatchShard:
    """This rank's part of every global batch of `base` (a DataLoader over a map-style dataset):
    the index lists come from a DataLoader with base's own batch sampler and generator, so the
    shuffle draws exactly what iterating `base` draws; rank r keeps rows r, r + world, ... and
    collates them (None for an empty shard)."""

    def __init__(self, base: DataLoader, rank: int, world: int):
        self.base, self.rank, self.world = base, rank, world

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self):
        idx = DataLoader(range(len(self.base.dataset)), batch_sampler=self.base.batch_sampler,
                         generator=self.base.generator, collate_fn=list, num_workers=0)
        ds, collate = self.base.dataset, self.base.collate_fn
        for rows in idx:
            mine = [int(i) for i in rows[self.rank:: self.world]]
            yield collate([ds[i] for i in mine]) if mine else None


class SkipEmpty:
    """An evaluation loader without the empty shards (evaluation has no per-batch collective)."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return (b for b in self.loader if b is not None)


def for_eval(loader: DataLoader, d: Dist):
    """This rank's part of an evaluation loader (empty shards skipped)."""
    return SkipEmpty(sharded(loader, d)) if d.active else loader


def sharded(loader: DataLoader, d: Dist):
    """This rank's part of every global batch of `loader` (built by runtime/train_setup.loader from
    a map-style Dataset). Batches are None for empty shards."""
    if not d.active:
        return loader
    if loader.batch_sampler is None:
        raise ValueError("--ddp needs a map-style Dataset (its batches are split between the processes)")
    return GlobalBatchShard(loader, d.rank, d.world)
