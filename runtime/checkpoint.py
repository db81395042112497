"""Checkpoints: safe to load, self-contained, never half-written, never non-finite.

A checkpoint is a dict of tensors and plain data only (str, int, float, bool, None, lists, tuples,
dicts), written with torch.save and read with `torch.load(weights_only=True)`, so loading a
crafted file never runs code. It holds the model reference (the main .snn path, the text of every
source file the model was compiled from, the import search roots), the state dict, the optimiser
state, the epoch, the metrics, the config and the seed, plus a sha256 digest of all of it: a
truncated, byte-flipped or edited file is refused with a one-line CheckpointError, never a
traceback. Writes are atomic (temp file in the same folder, fsync, os.replace) and refuse
non-finite parameters or optimiser state, so last.pt/best.pt always hold a usable state.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

FORMAT = "spikescan-checkpoint-2"

# key -> required type of a loadable checkpoint (validated before anything uses it)
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "state_dict": dict, "optimizer": dict, "epoch": int, "network": str, "model_path": str,
    "model_sources": dict, "model_roots": list, "net_kwargs": dict, "config": dict, "history": list,
    "seed": int, "best_val_accuracy": (int, float), "best_epoch": int,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (unreadable, corrupt, unsafe, or not matching the
    network); the message is one line naming the file and what to do."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only folder); the old one is intact."""

    def __str__(self) -> str:
        return str(self.args[1] if len(self.args) > 1 else self.args[0])


# ----------------------------------------------------------------------------- model sources


def sources_hash(sources: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for path in sorted(sources):
        h.update(f"{len(path)}:{path}{len(sources[path])}:".encode() + sources[path].encode())
    return h.hexdigest()


def model_reference(model) -> dict[str, Any]:
    """The model part of a checkpoint from a CompiledModel (compiler.driver.load_model) or a
    .snn path: the main file's real path, the text of every file the loader read (the main file
    and all its imports, keyed by real path) and the import search roots."""
    from spikescan.dsl.files import search_roots

    if isinstance(model, (str, os.PathLike)):
        from spikescan.compiler.driver import load_model

        model = load_model(str(model))
    main = os.path.realpath(model.source_path)
    sources = {os.path.realpath(name): text for name, text in (model.sources or {}).items()}
    return dict(model_path=main, model_sources=sources, model_roots=search_roots(main),
                model_sha256=sources_hash(sources))


def _mirror_path(root: Path, path: str, ck_path) -> Path:
    """Where an embedded absolute path lives in the private mirror (never outside it)."""
    if not isinstance(path, str) or not os.path.isabs(path) or os.path.normpath(path) != path \
            or ".." in Path(path).parts or "\0" in path:
        raise CheckpointError(f"{ck_path}: embedded source path {path!r} is not a normalised absolute path")
    return root / path.lstrip(os.sep)


def load_embedded_model(ck: dict, ck_path="checkpoint"):
    """Compile the model from the sources stored in the checkpoint only: they are written to a
    private temporary mirror of their original paths, and the loader's search path is that
    mirror, so no file outside the checkpoint is read (the model folder may have moved or
    changed). DiagnosticError if the stored sources do not compile."""
    from spikescan.compiler.driver import load_model

    if not ck["model_sources"]:
        raise CheckpointError(f"{ck_path} embeds no model source (it was trained from an in-memory network): build "
                              "that network in Python and load the checkpoint's state_dict into it")
    with tempfile.TemporaryDirectory(prefix="spikescan-ck-") as tmp:
        root = Path(tmp) / "fs"
        for path, text in ck["model_sources"].items():
            q = _mirror_path(root, path, ck_path)
            q.parent.mkdir(parents=True, exist_ok=True)
            q.write_text(text, encoding="utf-8")
        main = _mirror_path(root, ck["model_path"], ck_path)
        if ck["model_path"] not in ck["model_sources"]:
            raise CheckpointError(f"{ck_path}: the source of {ck['model_path']} is not embedded")
        extra = [str(_mirror_path(root, r, ck_path)) for r in ck["model_roots"][1:]]
        old = os.environ.get("SPIKESCAN_PATH")
        os.environ["SPIKESCAN_PATH"] = os.pathsep.join(e for e in extra if os.path.isdir(e))
        try:
            return load_model(str(main))
        finally:
            if old is None:
                os.environ.pop("SPIKESCAN_PATH", None)
            else:
                os.environ["SPIKESCAN_PATH"] = old


# ----------------------------------------------------------------------------- plain data, digest


def _plain(x: Any, where: str) -> None:
    """TypeError unless x is tensors and plain data (what weights_only=True loads)."""
    if x is None or isinstance(x, (torch.Tensor, str, bool, int, float)):
        return
    if isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            _plain(v, f"{where}[{i}]")
        return
    if isinstance(x, dict):
        for k, v in x.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint key {where}[{k!r}] is not a str or int")
            _plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(f"checkpoint entry {where} is a {type(x).__name__}: only tensors and plain data are saved")


def _feed(h, x: Any) -> None:
    """Hash x canonically (tensors by dtype, shape and bytes; dicts by sorted keys)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(x, dict):
        h.update(f"D{len(x)}|".encode())
        for k in sorted(x, key=lambda k: (type(k).__name__, str(k))):
            _feed(h, k)
            _feed(h, x[k])
    elif isinstance(x, (list, tuple)):
        h.update(f"{'L' if isinstance(x, list) else 'U'}{len(x)}|".encode())
        for v in x:
            _feed(h, v)
    elif isinstance(x, float):
        h.update(f"F{x.hex()}|".encode())
    elif isinstance(x, str):
        b = x.encode("utf-8", "surrogatepass")
        h.update(f"S{len(b)}|".encode() + b)
    else:  # None, bool, int
        h.update(f"{type(x).__name__}{x!r}|".encode())


def digest(payload: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "digest"})
    return h.hexdigest()


def non_finite(tree: Any, where: str = "") -> str | None:
    """The first entry of a state (nested dicts/lists of tensors and numbers) that is not
    finite, or None."""
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and not bool(torch.isfinite(tree).all()):
            return where
    elif isinstance(tree, float):
        if tree != tree or tree in (float("inf"), float("-inf")):
            return where
    elif isinstance(tree, dict):
        for k, v in tree.items():
            bad = non_finite(v, f"{where}.{k}" if where else str(k))
            if bad:
                return bad
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            bad = non_finite(v, f"{where}[{i}]")
            if bad:
                return bad
    return None


# ----------------------------------------------------------------------------- save / load


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write payload to path atomically. CheckpointError (nothing written) when the parameters
    or the optimiser state are not finite; CheckpointWriteError when the disk refuses."""
    path = Path(path)
    payload = dict(payload, format=FORMAT)
    _plain(payload, "checkpoint")
    for key in ("state_dict", "optimizer"):
        bad = non_finite(payload.get(key), key)
        if bad:
            raise CheckpointError(f"refusing to write {path}: {bad} is not finite (the previous "
                                  f"{path.name} is unchanged)")
    payload["digest"] = digest(payload)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        raise CheckpointWriteError(e.errno, f"cannot write checkpoint {path}: {e.strerror or e}"
                                   f" (the previous {path.name}, if any, is unchanged)") from e
    except BaseException:
        _unlink(tmp)
        raise
    return path


def _unlink(tmp) -> None:
    if tmp and os.path.exists(tmp):
        os.unlink(tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a checkpoint: safe unpickling (tensors and plain data only), the
    digest, the required keys and their types, finite state. Raises FileNotFoundError or
    CheckpointError with one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" if not path.exists()
                                else f"checkpoint {path} is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was never written completely")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure of an untrusted file is "corrupt"
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            why = "it contains Python objects other than tensors and plain data (refused: loading it could run code)"
        raise CheckpointError(f"checkpoint {path} is corrupt or not a spikescan checkpoint: {why[:300]}") from None
    _validate(ck, path)
    return ck


def _validate(ck: Any, path: Path) -> None:
    if not isinstance(ck, dict) or "format" not in ck:
        raise CheckpointError(f"{path} is not a spikescan checkpoint")
    if ck["format"] != FORMAT:
        raise CheckpointError(f"{path} has format {ck['format']!r}, this spikescan reads {FORMAT!r}: "
                              "train again to write a current checkpoint")
    if ck.get("digest") != digest(ck):
        raise CheckpointError(f"checkpoint {path} is corrupt: its content does not match its sha256 digest "
                              "(truncated, edited or damaged on disk)")
    for key, typ in REQUIRED.items():
        if key not in ck:
            raise CheckpointError(f"checkpoint {path} is incomplete: no {key!r} entry")
        if not isinstance(ck[key], typ) or (typ is int and isinstance(ck[key], bool)):
            raise CheckpointError(f"checkpoint {path}: entry {key!r} is a {type(ck[key]).__name__}")
    if ck["epoch"] < 0:
        raise CheckpointError(f"checkpoint {path}: negative epoch {ck['epoch']}")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ck["state_dict"].items()):
        raise CheckpointError(f"checkpoint {path}: the state dict must map names to tensors")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in ck["model_sources"].items()):
        raise CheckpointError(f"checkpoint {path}: the model sources must map paths to text")
    for key in ("state_dict", "optimizer"):
        bad = non_finite(ck[key], key)
        if bad:
            raise CheckpointError(f"checkpoint {path}: {bad} is not finite")


def load_state(module: torch.nn.Module, state: dict, path) -> None:
    """module.load_state_dict after check_state."""
    check_state(module, state, path)
    module.load_state_dict(state)


def check_state(module: torch.nn.Module, state: dict, path) -> None:
    """CheckpointError naming the first name, shape or dtype of `state` that does not fit
    `module` (a checkpoint of another network, or an edited one)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        raise CheckpointError(f"checkpoint {path} does not fit network: missing {missing[:3]}, unexpected {extra[:3]}")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape) or state[k].dtype != v.dtype:
            raise CheckpointError(f"checkpoint {path}: {k} is {state[k].dtype} {tuple(state[k].shape)}, the network "
                                  f"has {v.dtype} {tuple(v.shape)}")


def load_optimizer(opt: torch.optim.Optimizer, state: dict, path) -> None:
    """opt.load_state_dict after checking that every per-parameter state tensor fits its
    parameter (torch itself checks only the group sizes, and a bad shape would crash later)."""
    params = [p for g in opt.param_groups for p in g["params"]]
    try:
        groups, st = state["param_groups"], state["state"]
        ids = [i for g in groups for i in g["params"]]
        if len(ids) != len(params):
            raise ValueError(f"{len(ids)} parameters, the network trains {len(params)}")
        for i, p in zip(ids, params):
            for name, v in st.get(i, {}).items():
                if isinstance(v, torch.Tensor) and v.dim() > 0 and tuple(v.shape) != tuple(p.shape):
                    raise ValueError(f"state {name} of parameter {i} is {tuple(v.shape)}, not {tuple(p.shape)}")
        opt.load_state_dict(state)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: the optimiser state does not fit the network ({e})") from None
