"""The compile driver: .snn file -> analysed model (in memory) -> build folder (artifacts + cache).

    load_model(path)    -> CompiledModel (analysis only, no files written)
    compile_model(path, out_dir=None, emit=("mlir", "triton", "cpu"), dtype="f64", force=False,
                  progress=print) -> CompiledModel with .build_dir and .manifest
    load_compiled(dir)  -> CompiledModel re-analysed from the source copy stored in the folder

A build folder `<root>/<hash>/` (root: out_dir, else $SPIKESCAN_CACHE, else ./.spikescan-cache)
is keyed by a content hash of every source file (the main file and what it imports), the
compiler version and the options; it holds manifest.json, `src/` (the sources, so the folder is
self-contained), `<Neuron>.<dtype>.mlir` and `<Neuron>_triton.py`. It is written to a temporary
folder and renamed into place, so concurrent compiles never see half a build.
Errors of the file, the analysis or a backend raise spikescan.dsl DiagnosticError.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from spikescan import __version__
from spikescan.dsl import ast
from spikescan.dsl.diagnostics import Diagnostic, DiagnosticError

from .errors import CompileError
from .ir import NetworkIR, NeuronIR

# Bump when the analysis or the artifact layout changes: invalidates every cache entry.
COMPILER_ABI = "1"
BACKENDS = ("mlir", "triton", "cpu")
DTYPES = ("f32", "f64")


@dataclass
class CompiledModel:
    source_path: Path
    neurons: dict[str, NeuronIR]
    networks: dict[str, NetworkIR]
    build_dir: Optional[Path] = None
    manifest: Optional[dict] = None
    cache_hit: bool = False


# ----------------------------------------------------------------------------- analysis

_ANALYSIS_CACHE: dict[ast.Neuron, NeuronIR] = {}  # frozen AST (with spans) -> IR


def _sources_for(diags: list[Diagnostic]) -> dict[str, str]:
    out = {}
    for d in diags:
        if d.span is not None and d.span.file not in out and os.path.isfile(d.span.file):
            try:
                out[d.span.file] = Path(d.span.file).read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError):
                pass
    return out


def _raise(diags: list[Diagnostic]):
    raise DiagnosticError(diags, _sources_for(diags))


def analyze_cached(neuron: ast.Neuron) -> NeuronIR:
    from .analysis import analyze_neuron

    if neuron not in _ANALYSIS_CACHE:
        _ANALYSIS_CACHE[neuron] = analyze_neuron(neuron)
    return _ANALYSIS_CACHE[neuron]


def analyze_module(module: ast.Module) -> tuple[dict[str, NeuronIR], dict[str, NetworkIR]]:
    """Analyse every visible neuron and every network of a loaded module (DiagnosticError)."""
    from .analysis import analyze_network

    visible = dict(module.visible_neurons)
    visible.update({n.name: n for n in module.neurons})
    neurons, networks, diags = {}, {}, []
    for name, n in visible.items():
        try:
            neurons[name] = analyze_cached(n)
        except CompileError as e:
            diags.append(e.diagnostic)
        except Exception as e:  # noqa: BLE001 - a compiler bug still reaches the user as a diagnostic
            diags.append(_internal(f"neuron '{name}'", e, n.name_span))
    if not diags:
        for net in module.networks:
            try:
                networks[net.name] = analyze_network(net, neurons)
            except CompileError as e:
                diags.append(e.diagnostic)
            except Exception as e:  # noqa: BLE001
                diags.append(_internal(f"network '{net.name}'", e, net.span))
    if diags:
        _raise(diags)
    return neurons, networks


def _internal(what: str, exc: BaseException, span) -> Diagnostic:
    msg = (str(exc).strip().splitlines() or [""])[0][:300]
    return Diagnostic("E064", f"internal compiler error while analysing {what}: {type(exc).__name__}: {msg}",
                      span, "this is a bug in spikescan; please report it with this file")


def load_model(path) -> CompiledModel:
    """Parse, check and analyse a .snn file (and its imports); nothing is written."""
    from spikescan.dsl import load

    module = load(str(path))
    neurons, networks = analyze_module(module)
    return CompiledModel(source_path=Path(path), neurons=neurons, networks=networks)


# ----------------------------------------------------------------------------- sources and hash


def source_files(path) -> list[Path]:
    """The main file followed by every file it imports (transitively), resolved paths."""
    from spikescan.dsl.parser import parse_source

    out: list[Path] = []
    todo = [Path(path).resolve()]
    while todo:
        p = todo.pop(0)
        if p in out or not p.is_file():
            continue
        out.append(p)
        module, _ = parse_source(p.read_text(encoding="utf-8-sig"), str(p))
        if module is not None:
            todo += [(p.parent / imp.path).resolve() for imp in module.imports]
    return out


def cache_root(out_dir=None) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    return Path(os.environ.get("SPIKESCAN_CACHE") or "./.spikescan-cache")


def content_hash(files: list[Path], base: Path, emit, dtype: str) -> str:
    h = hashlib.sha256()
    h.update(f"spikescan {__version__} abi {COMPILER_ABI}\n".encode())
    h.update(f"emit={','.join(sorted(emit))} dtype={dtype}\n".encode())
    for f in files:
        data = f.read_bytes()
        h.update(f"{f.relative_to(base).as_posix()} {len(data)}\n".encode())
        h.update(data)
    return h.hexdigest()[:20]


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


# ----------------------------------------------------------------------------- manifest


def _neuron_summary(ir: NeuronIR) -> dict:
    return {
        "state": list(ir.state),
        "init": [str(v) for v in ir.init],
        "params": [{"name": p.name, "default": p.default, "dim": p.dim} for p in ir.params],
        "ports": list(ir.ports),
        "threshold": None if ir.c is None else {"c": [str(v) for v in ir.c], "theta": str(ir.theta)},
        "reset": {"R": [[str(v) for v in ir.R.row(i)] for i in range(ir.d)], "r": [str(v) for v in ir.r]},
        "t_ref": str(ir.t_ref),
        "A": [[str(v) for v in ir.A.row(i)] for i in range(ir.d)],
        "a0": [str(v) for v in ir.a0],
        "Phi": [[str(v) for v in ir.Phi.row(i)] for i in range(ir.d)],
        "phi": [str(v) for v in ir.phi],
        "reset_invariant": [ir.state[i] for i in ir.reset_invariant],
        "solver": ir.solver,
        "chain_rates": [str(r) for r in ir.chain.rates] if ir.chain else [],
        "no_cross_rows": [{"row": [str(v) for v in row], "offset": str(off)} for row, off in ir.no_cross_rows],
        "notes": list(ir.notes),
        "kernels": {},
    }


def _network_summary(net: NetworkIR) -> dict:
    return {
        "inputs": dict(net.inputs),
        "layers": [
            {
                "name": l.name,
                "size": l.size,
                "neuron": l.neuron,
                "params": dict(l.params),
                "connections": [
                    {
                        "kind": c.kind,
                        "source": c.source,
                        "port": c.port,
                        "delays": None if c.delays is None else vars(c.delays).copy(),
                        "init": vars(c.init).copy(),
                    }
                    for c in l.connections
                ],
            }
            for l in net.layers
        ],
        "readout": {"layer": net.readout.layer, "kind": net.readout.kind, "args": dict(net.readout.args)},
    }


# ----------------------------------------------------------------------------- backends


def _backend_error(ir_name: str, backend: str, exc: BaseException, span) -> CompileError:
    if isinstance(exc, ModuleNotFoundError) and "spikescan.compiler.backends" in str(exc):
        return CompileError("E062", f"the {backend} backend is not available in this installation ({exc})",
                            span, f"compile with `--emit` listing only available backends (without {backend})")
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CompileError("E062", f"{backend} backend failed for neuron '{ir_name}': {type(exc).__name__}: {msg[:300]}",
                        span, "this is a compiler bug if the file checks cleanly; try `--emit` without "
                        f"{backend}, and please report it")


def _emit_one(ir: NeuronIR, backend: str, dtype: str, folder: Path) -> dict[str, str]:
    """Write one backend's artifact for one neuron; returns {kind: filename}."""
    if backend == "mlir":
        from .backends.mlir_emit import emit_module

        name = f"{ir.name}.{dtype}.mlir"
        (folder / name).write_text(emit_module(ir, dtype))
        return {"mlir": name}
    if backend == "triton":
        from .backends.triton_codegen import generate

        name = f"{ir.name}_triton.py"
        (folder / name).write_text(generate(ir, dtype))
        return {"triton": name}
    if backend == "cpu":
        # The CPU JIT compiles the MLIR in memory at run time; here we check that it lowers.
        from .backends import cpu_jit

        if hasattr(cpu_jit, "check_lowering"):
            cpu_jit.check_lowering(ir, dtype)
        elif hasattr(cpu_jit, "compile_neuron"):
            cpu_jit.compile_neuron(ir, dtype)
        return {"cpu": "jit"}
    raise ValueError(backend)


def compile_model(path, out_dir=None, emit=BACKENDS, dtype: str = "f64", force: bool = False,
                  progress: Optional[Callable[[str], None]] = print) -> CompiledModel:
    progress = progress or (lambda s: None)
    emit = tuple(emit)
    bad = [e for e in emit if e not in BACKENDS]
    if bad or dtype not in DTYPES:
        raise ValueError(f"emit must be a subset of {BACKENDS} (got {emit}); dtype one of {DTYPES} (got {dtype!r})")
    if not Path(path).is_file():
        _raise([Diagnostic("E004", f"no such file: {path}", None, "check the path")])
    model = load_model(path)  # diagnostics first: a bad file never touches the cache
    files = source_files(path)
    base = Path(os.path.commonpath([str(f.parent) for f in files]))
    key = content_hash(files, base, emit, dtype)
    root = cache_root(out_dir)
    build = root / key
    if (build / "manifest.json").is_file() and not force:
        progress(f"cache hit: {build}")
        manifest = json.loads((build / "manifest.json").read_text())
        model.build_dir, model.manifest, model.cache_hit = build, manifest, True
        return model

    progress(f"compiling {path} -> {build}")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{key}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir(parents=True)
    try:
        sources = {}
        for f in files:
            rel = f.relative_to(base).as_posix()
            dst = tmp / "src" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)
            sources[rel] = _sha(f.read_bytes())
        main_rel = files[0].relative_to(base).as_posix()

        # neurons defined in the main file or used by one of its networks
        module_neurons = _main_neurons(path, model)
        manifest = {
            "spikescan_version": __version__,
            "compiler_abi": COMPILER_ABI,
            "hash": key,
            "source": main_rel,
            "sources": sources,
            "dtype": dtype,
            "emit": list(emit),
            "neurons": {},
            "networks": {n: _network_summary(net) for n, net in model.networks.items()},
            "hashes": {},
        }
        diags = []
        for name in module_neurons:
            ir = model.neurons[name]
            summary = _neuron_summary(ir)
            for backend in emit:
                progress(f"  {name}: {backend}")
                try:
                    summary["kernels"].update(_emit_one(ir, backend, dtype, tmp))
                except DiagnosticError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any backend failure becomes a diagnostic
                    diags.append(_backend_error(name, backend, exc, _neuron_span(path, name)).diagnostic)
            manifest["neurons"][name] = summary
        if diags:
            _raise(diags)
        for f in sorted(tmp.glob("*")):
            if f.is_file():
                manifest["hashes"][f.name] = _sha(f.read_bytes())
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        finished_elsewhere = (build / "manifest.json").is_file() and not force
        if build.exists() and not finished_elsewhere:
            shutil.rmtree(build, ignore_errors=True)  # --force, or a broken folder without manifest
        if not finished_elsewhere:
            try:
                os.replace(tmp, build)
            except OSError:  # another process won the race with an identical build: keep theirs
                if not (build / "manifest.json").is_file():
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    progress(f"wrote {build}")
    model.build_dir, model.manifest = build, manifest
    return model


def _main_neurons(path, model: CompiledModel) -> list[str]:
    from spikescan.dsl.parser import parse_source

    module, _ = parse_source(Path(path).read_text(encoding="utf-8-sig"), str(path))
    names = [n.name for n in module.neurons] if module else []
    for net in model.networks.values():
        names += [l.neuron for l in net.layers if l.neuron not in names]
    return names or list(model.neurons)


def _neuron_span(path, name: str):
    from spikescan.dsl import load

    try:
        module = load(str(path))
        n = dict(module.visible_neurons, **{m.name: m for m in module.neurons}).get(name)
        return n.name_span if n is not None else None
    except DiagnosticError:
        return None


def load_compiled(build_dir) -> CompiledModel:
    """Read a build folder back: manifest plus a fresh analysis of its stored sources."""
    build = Path(build_dir)
    mpath = build / "manifest.json"
    if not mpath.is_file():
        raise FileNotFoundError(f"{build} is not a spikescan build folder (no manifest.json)")
    manifest = json.loads(mpath.read_text())
    model = load_model(build / "src" / manifest["source"])
    model.build_dir, model.manifest = build, manifest
    return model
