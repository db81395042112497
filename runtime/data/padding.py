"""Detection of zero padding in an input batch.

spikescan pads batches with +inf times ("no event"; see events.pad_collate). A zero-padded batch,
as ``tonic.collation.PadTensors`` makes it, instead carries fake events at t = 0 ms on channel 0,
which an engine would simulate as real input spikes. Zero padding is detected where it cannot be
real data: a row whose events are sorted by time except for a trailing run of (t = 0, channel =
0) events after a later time (PadTensors appends the zeros after the sample's last, latest,
event). A row of only (0, 0) events, or zeros after unsorted events, is indistinguishable from
real input and is not flagged.
"""
from __future__ import annotations

import torch

FIX = ("pad with +inf times instead: pass collate_fn=spikescan.runtime.data.pad_collate to the "
       "DataLoader (with transform=spikescan.runtime.data.ToSpikescan(sensor_size) on a tonic "
       "dataset); see docs/datasets.md, 'Using tonic datasets directly'")


def zero_padded_rows(times, channels):
    """Indices (int64 tensor) and trailing-run lengths of the rows that end in zero padding."""
    t = torch.as_tensor(times).detach()
    c = torch.as_tensor(channels).detach()
    if t.dim() != 2 or c.shape != t.shape or t.shape[1] < 2:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    cand = ((t[:, -1] == 0) & (c[:, -1] == 0)).nonzero().flatten()  # O(B): the usual exit
    if cand.numel() == 0:
        return cand.cpu(), cand.cpu()
    t, c = t[cand], c[cand]
    n = t.shape[1]
    zero = (t == 0) & (c == 0)
    run = zero.flip(1).to(torch.int32).cumprod(1).sum(1).long()  # trailing (0, 0) run per row
    last = (n - 1 - run).clamp(min=0)  # index of the event just before the run
    before = t.gather(1, last.unsqueeze(1)).squeeze(1)
    pair = torch.arange(n - 1, device=t.device).unsqueeze(0)  # pair (j, j + 1) of the prefix
    ascending = (t[:, 1:] >= t[:, :-1]) | (pair >= last.unsqueeze(1))
    hit = (run > 0) & (run < n) & (before > 0) & ascending.all(1)
    rows = hit.nonzero().flatten()
    return cand[rows].cpu(), run[rows].cpu()


def check_not_zero_padded(times, channels):
    """Raise ValueError when a row of the batch ``times`` / ``channels`` [B, n] ends in zero
    padding (see the module docstring); the message names the samples and the fix."""
    rows, runs = zero_padded_rows(times, channels)
    if rows.numel() == 0:
        return
    b, k = int(rows[0]), int(runs[0])
    t = torch.as_tensor(times).detach()
    before = float(t[b, t.shape[1] - k - 1])
    others = rows[1:6].tolist()
    more = (f"; also sample(s) {', '.join(map(str, others))}{', ...' if rows.numel() > 6 else ''}"
            if others else "")
    raise ValueError(f"input sample {b} of the batch ends with {k} event(s) at t = 0 ms on "
                     f"channel 0 after an event at t = {before:g} ms: that is zero padding "
                     f"(tonic.collation.PadTensors pads with zeros), which would be simulated as "
                     f"real input spikes at t = 0{more}; {FIX}")
