"""`init = auto(...)` in training (runtime/auto_init.py): a new run scales the auto connections on
its first training batch, before the first step; the record goes to the progress output, the
first epoch's metrics record and every checkpoint. A resumed run never scales again: its weights
come from last.pt, and it carries the first run's record on."""

from __future__ import annotations

from typing import Callable, Optional

from spikescan.runtime.devices import to_device


def wants_auto_init(net) -> bool:
    """Whether some exact layer of `net` has an auto connection (discrete PSN networks never do)."""
    from spikescan.runtime.auto_init import target_rate

    if getattr(getattr(net, "ir", None), "discrete", None):
        return False
    return any(target_rate(net, name, lay) is not None for name, lay in getattr(net, "layers", {}).items())


def first_batch_auto_init(net, train_split, batch_size: int, seed: int, t_end: float,
                          info: Callable[[str], None]) -> Optional[dict]:
    """Scale `net`'s auto connections on the first batch that epoch 1 trains on (the same seeded
    shuffle; under --ddp every process uses the whole batch, so all get the same scales). None when
    the network has no auto connection."""
    from spikescan.runtime.auto_init import auto_init, summary
    from spikescan.runtime.train_data import batches

    if not wants_auto_init(net):
        return None
    first = next(iter(batches(train_split, batch_size, True, seed * 1_000_003)), None)
    if first is None:
        return None
    times, channels, _ = to_device(first, net.float_like().device)
    record = auto_init(net, times, channels, t_end)
    info(summary(record))
    return record


def checked_record(rec) -> Optional[dict]:
    """The auto-init record of a checkpoint (untrusted) when it has the expected form, else None."""
    if not isinstance(rec, dict) or not isinstance(rec.get("layers"), list):
        return None
    if not all(isinstance(r, dict) and isinstance(r.get("layer"), str) for r in rec["layers"]):
        return None
    return rec


def restore_cap(net, rec: Optional[dict], max_spikes: int) -> None:
    """A resumed run gets back the spike cap that auto init set (rebuilt from the .snn, the
    network has the default one); bounded by --max-spikes."""
    cap = (rec or {}).get("spike_cap")
    if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
        net.max_spikes = max(int(net.max_spikes), min(cap, int(max_spikes)))


def resumed_line(rec: Optional[dict]) -> str:
    if rec is None:
        return "auto init: not redone on resume (the weights come from the checkpoint)"
    layers = rec.get("layers") if isinstance(rec, dict) else None  # read from a checkpoint: untrusted
    names = ", ".join(str(r.get("layer", "?")) for r in layers if isinstance(r, dict)) if isinstance(
        layers, list) else "?"
    names = names or "no layer"
    return f"auto init: done when this run started ({names}); not redone on resume"
