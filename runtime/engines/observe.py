"""Readout observables over [0, t_end], accumulated segment by segment (a segment is a piece of
an inter-event interval with a known start state and no spike inside):
max_potential = max of u over all segments (u at the isolated stationary points and the ends),
li_integral = sum of the closed-form integrals of u. Gradients: envelope theorem for the max
(an interior location is found without autograd, u is evaluated there with autograd; a maximum
at a segment's end moves with that end, which is an arrival or a spike time)."""

from __future__ import annotations

import math

import torch

from spikescan.runtime.engines.common import lane_params
from spikescan.runtime.engines.spike_time import potential_max
from spikescan.runtime.kernels import NeuronKernels, densify, rowvec

Tensor = torch.Tensor


class Observer:
    def __init__(self, kern: NeuronKernels, kind, P: tuple, B: int, N: int, dtype, device):
        self.kern, self.kind, self.P, self.N = kern, kind, P, N
        self.vals: list = []
        self.lanes: list = []
        self.L = B * N
        self.dtype, self.device = dtype, device

    def add(self, lane: Tensor, x: list, length: Tensor, mask: Tensor):
        """lane [M]; x: d tensors [M, K] (segment start states); length, mask [M, K]."""
        if self.kind is None:
            return
        mi, ki = mask.nonzero(as_tuple=True)
        if mi.numel() == 0:
            return
        xs = [v[mi, ki] for v in x]
        L = length[mi, ki]
        ln = lane[mi]
        Pl = lane_params(self.P, ln % self.N)
        if self.kind == "max_potential":
            loc = potential_max(self.kern, xs, Pl, L.detach())
            # a maximiser at the segment's end moves with that end (an arrival or a spike time:
            # at a spike this gives d(theta)/dp); interior ones are fixed (envelope theorem)
            Ld = L.detach()
            loc = torch.where((loc == Ld) & (Ld > 0), L, loc)
            u = rowvec(self.kern.c(Pl), self.kern.propagate(loc, xs, Pl))
        else:
            u = rowvec(self.kern.c(Pl), self.kern.integral_state(L, xs, Pl))
        self.vals.append(densify([u], L)[0])
        self.lanes.append(ln)

    def result(self):
        if self.kind is None:
            return None
        if self.kind == "max_potential":
            out = torch.full((self.L,), -math.inf, dtype=self.dtype, device=self.device)
            if self.vals:
                out = out.scatter_reduce(0, torch.cat(self.lanes), torch.cat(self.vals), "amax")
        else:
            out = torch.zeros(self.L, dtype=self.dtype, device=self.device)
            if self.vals:
                out = out.index_add(0, torch.cat(self.lanes), torch.cat(self.vals))
        return out.reshape(-1, self.N)
