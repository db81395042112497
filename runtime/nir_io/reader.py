"""Read a NIR file (HDF5, as `nir.write` lays it out) as untrusted input.

The file is read with h5py directly, not with `nir.read`, so that nothing is loaded before it is
checked: only hard links (an external or soft link could point into another file), no virtual or
externally stored datasets, at most MAX_NODES nodes, every array at most MAX_ELEMENTS entries and
all of them together at most MAX_TOTAL (as the .snn limits, docs/language.md), numeric arrays of
real numbers that are finite, strings that are short UTF-8. A nested NIRGraph (subgraph) is
refused. The result is plain data: {name: RawNode}, a list of edges and the graph metadata.
h5py never unpickles, and every failure of a malformed file is a one-line NirError."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import NirError

MAX_NODES = 100_000
MAX_EDGES = 1_000_000
MAX_ELEMENTS = 100_000_000
MAX_TOTAL = 200_000_000
MAX_STRING = 4096
METADATA_KEYS = ("spikescan_readout", "spikescan_spike_area_s", "spikescan_network", "spikescan_neuron", "producer",
                 "spikescan_connection")


@dataclass
class RawNode:
    type: str
    fields: dict  # name -> np.ndarray (float64 or int64) or str
    metadata: dict = field(default_factory=dict)


@dataclass
class RawGraph:
    nodes: dict  # name -> RawNode
    edges: list  # (source, target)
    metadata: dict
    version: str = ""


class _Budget:
    def __init__(self, path):
        self.path, self.total = path, 0

    def take(self, n: int, where: str) -> None:
        if n > MAX_ELEMENTS:
            raise NirError(f"{self.path}: {where} has {n} entries, more than the limit of {MAX_ELEMENTS}")
        self.total += n
        if self.total > MAX_TOTAL:
            raise NirError(f"{self.path}: the arrays hold more than {MAX_TOTAL} entries in all (limit)")


def _children(h5py, group, where: str, path) -> dict:
    """name -> object of a group, refusing anything but hard links to groups and plain datasets."""
    out = {}
    for key in group.keys():
        link = group.get(key, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise NirError(f"{path}: {where}/{key} is a {type(link).__name__} (links to other files or paths are "
                           "refused in an untrusted NIR file)")
        obj = group[key]
        if isinstance(obj, h5py.Dataset) and (obj.is_virtual or obj.external):
            raise NirError(f"{path}: {where}/{key} is stored outside the file (refused)")
        out[key if isinstance(key, str) else key.decode("utf-8", "replace")] = obj
    return out


def _string(h5py, ds, where: str, path) -> str:
    if not isinstance(ds, h5py.Dataset) or ds.shape != () or ds.dtype.kind not in "OSU":
        raise NirError(f"{path}: {where} must be a string")
    v = ds[()]
    if isinstance(v, bytes):
        try:
            v = v.decode("utf-8")
        except UnicodeDecodeError:
            raise NirError(f"{path}: {where} is not UTF-8 text") from None
    if not isinstance(v, str) or len(v) > MAX_STRING:
        raise NirError(f"{path}: {where} must be a string of at most {MAX_STRING} characters")
    return v


def _array(h5py, ds, where: str, path, budget: _Budget) -> np.ndarray:
    if not isinstance(ds, h5py.Dataset):
        raise NirError(f"{path}: {where} must be an array, found a group")
    if ds.dtype.kind not in "fiub":
        raise NirError(f"{path}: {where} must hold real numbers, found dtype {ds.dtype}")
    if ds.ndim > 8:
        raise NirError(f"{path}: {where} has {ds.ndim} dimensions")
    budget.take(int(ds.size), where)
    a = np.asarray(ds[()])
    a = a.astype(np.int64) if a.dtype.kind in "iub" else a.astype(np.float64)
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise NirError(f"{path}: {where} holds a NaN or infinite value")
    return a


def _metadata(h5py, group, where: str, path) -> dict:
    out = {}
    for key, obj in _children(h5py, group, where, path).items():
        if key not in METADATA_KEYS or not isinstance(obj, h5py.Dataset) or obj.shape != ():
            continue  # metadata carries no semantics; only spikescan's own keys are read
        if obj.dtype.kind in "OSU":
            out[key] = _string(h5py, obj, f"{where}/{key}", path)
        elif obj.dtype.kind in "fi":
            v = float(obj[()])
            if np.isfinite(v):
                out[key] = v
    return out


def _edges(h5py, ds, path) -> list:
    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "OSU" or ds.ndim != 2 or ds.shape[1] != 2:
        if isinstance(ds, h5py.Dataset) and ds.size == 0:
            return []
        raise NirError(f"{path}: the graph's edges must be an (n, 2) array of node names")
    if ds.shape[0] > MAX_EDGES:
        raise NirError(f"{path}: {ds.shape[0]} edges, more than the limit of {MAX_EDGES}")
    out = []
    for a, b in ds[()]:
        pair = []
        for v in (a, b):
            if isinstance(v, bytes):
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError:
                    raise NirError(f"{path}: an edge names a node in non-UTF-8 bytes") from None
            if not isinstance(v, str) or len(v) > MAX_STRING:
                raise NirError(f"{path}: an edge does not name a node")
            pair.append(v)
        out.append(tuple(pair))
    return out


def _node(h5py, group, name: str, path, budget: _Budget) -> RawNode:
    where = f"node '{name}'"
    if not isinstance(group, h5py.Group):
        raise NirError(f"{path}: {where} is not a group")
    items = _children(h5py, group, f"nodes/{name}", path)
    if "type" not in items:
        raise NirError(f"{path}: {where} has no type")
    typ = _string(h5py, items.pop("type"), f"{where}: type", path)
    if typ == "NIRGraph":
        raise NirError(f"{path}: {where} is a nested NIRGraph (subgraph); spikescan imports flat graphs only: "
                       "inline the subgraph's nodes into the top-level graph")
    from .graph import refusal

    why = refusal(typ)
    if why:
        raise NirError(f"{path}: {where} is a {typ} node: {why}")
    meta = _metadata(h5py, items.pop("metadata"), f"{where}/metadata", path) if isinstance(
        items.get("metadata"), h5py.Group) else {}
    items.pop("metadata", None)
    fields = {}
    for key, obj in items.items():
        if isinstance(obj, h5py.Group) and key in ("input_type", "output_type"):  # Flatten: {port: shape}
            sub = _children(h5py, obj, f"nodes/{name}/{key}", path)
            fields[key] = {k: _array(h5py, v, f"{where} ({typ}): {key}/{k}", path, budget) for k, v in sub.items()}
            continue
        if isinstance(obj, h5py.Group):
            raise NirError(f"{path}: {where} ({typ}): entry '{key}' is a group, not an array")
        if obj.dtype.kind in "OSU":
            fields[key] = _string(h5py, obj, f"{where} ({typ}): {key}", path)
        else:
            fields[key] = _array(h5py, obj, f"{where} ({typ}): {key}", path, budget)
    return RawNode(type=typ, fields=fields, metadata=meta)


def read_raw(path) -> RawGraph:
    """Read and structurally check a NIR file; NirError (one line) if it is not one."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"NIR file {path} does not exist")
    if not path.is_file():
        raise NirError(f"NIR file {path} is not a regular file")
    if os.path.getsize(path) == 0:
        raise NirError(f"NIR file {path} is empty")
    try:
        f = h5py.File(path, "r")
    except Exception as e:  # noqa: BLE001 - any failure to open an untrusted file is "not a NIR file"
        why = " ".join(str(e).split())[:200] or type(e).__name__
        raise NirError(f"{path} is not a readable NIR file (HDF5): {why}") from None
    try:
        with f:
            return _read_open(h5py, f, path)
    except NirError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt file can fail inside h5py anywhere
        why = " ".join(str(e).split())[:200] or type(e).__name__
        raise NirError(f"{path} is a corrupt NIR file: {type(e).__name__}: {why}") from None


def _read_open(h5py, f, path) -> RawGraph:
    top = _children(h5py, f, "", path)
    version = _string(h5py, top["version"], "version", path) if "version" in top else ""
    if "node" not in top or not isinstance(top["node"], h5py.Group):
        raise NirError(f"{path} is an HDF5 file but not a NIR graph (no 'node' group)")
    root = _children(h5py, top["node"], "node", path)
    if "type" not in root or _string(h5py, root["type"], "node/type", path) != "NIRGraph":
        raise NirError(f"{path}: the top-level node is not a NIRGraph")
    if "nodes" not in root or not isinstance(root["nodes"], h5py.Group):
        raise NirError(f"{path}: the graph has no 'nodes' group")
    if "edges" not in root:
        raise NirError(f"{path}: the graph has no 'edges'")
    members = _children(h5py, root["nodes"], "node/nodes", path)
    if len(members) > MAX_NODES:
        raise NirError(f"{path}: {len(members)} nodes, more than the limit of {MAX_NODES}")
    budget = _Budget(path)
    nodes = {name: _node(h5py, obj, name, path, budget) for name, obj in members.items()}
    edges = _edges(h5py, root["edges"], path)
    meta = _metadata(h5py, root["metadata"], "node/metadata", path) if isinstance(
        root.get("metadata"), h5py.Group) else {}
    return RawGraph(nodes=nodes, edges=edges, metadata=meta, version=version)
