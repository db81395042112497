"""The compile driver: .snn file -> analysed model (in memory) -> build folder (artifacts + cache).

    load_model(path)    -> CompiledModel (analysis only, no files written)
    compile_model(path, out_dir=None, emit=("mlir", "triton", "cpu"), dtype="f64", force=False,
                  progress=print) -> CompiledModel with .build_dir and .manifest
    load_compiled(dir)  -> CompiledModel re-analysed from the source copy stored in the folder

Every file is read by the dsl loader (spikescan.dsl.load_with_sources), so its encoding and
size guards apply here too. A build folder `<root>/<hash>/` (root: out_dir, else
$SPIKESCAN_CACHE, else ./.spikescan-cache) is keyed by a content hash of the texts the loader
read (the main file and what it imports), the compiler version and the options; it holds
manifest.json, `src/` (the sources, so the folder is self-contained), `<Neuron>.<dtype>.mlir`
and `<Neuron>_triton.py`. It is written to a temporary folder and renamed into place, so
concurrent compiles never see half a build. The hash is computed before the analysis: a cache
hit neither analyses nor runs a backend.
Errors of the file, the analysis or a backend raise spikescan.dsl DiagnosticError.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

from spikescan import __version__
from spikescan.dsl import ast
from spikescan.dsl.diagnostics import Diagnostic, DiagnosticError
from spikescan.dsl.loader import load_with_sources, sources_of

from .errors import CompileError
from .ir import NetworkIR, NeuronIR

# Bump when the analysis or the artifact layout changes: invalidates every cache entry.
COMPILER_ABI = "1"
BACKENDS = ("mlir", "triton", "cpu")
DTYPES = ("f32", "f64")


class CompiledModel:
    """A loaded model: `neurons` (name -> NeuronIR) and `networks` (name -> NetworkIR).

    Built from a checked module, the analysis runs on first access to `neurons` or `networks`,
    so a cache hit of `compile_model` costs a parse and a hash, not an analysis. The analysis is
    deterministic given the sources and the compiler version (both in the hash), so a model
    whose build folder exists analyses cleanly."""

    def __init__(self, source_path, neurons: Optional[dict[str, NeuronIR]] = None,
                 networks: Optional[dict[str, NetworkIR]] = None, *, module: Optional[ast.Module] = None,
                 sources: Optional[dict[str, str]] = None, build_dir: Optional[Path] = None,
                 manifest: Optional[dict] = None, cache_hit: bool = False):
        if neurons is None and module is None:
            raise ValueError("CompiledModel needs the analysed neurons or the checked module")
        self.source_path = Path(source_path)
        self.module, self.sources = module, sources
        self._neurons, self._networks = neurons, networks if networks is not None else {}
        self.build_dir, self.manifest, self.cache_hit = build_dir, manifest, cache_hit

    def analyse(self) -> "CompiledModel":
        """Run the analysis now (DiagnosticError on a model the compiler cannot handle)."""
        if self._neurons is None:
            self._neurons, self._networks = analyze_module(self.module, self.sources)
        return self

    @property
    def neurons(self) -> dict[str, NeuronIR]:
        return self.analyse()._neurons

    @property
    def networks(self) -> dict[str, NetworkIR]:
        return self.analyse()._networks

    def __repr__(self) -> str:
        state = "analysed" if self._neurons is not None else "not analysed yet"
        return f"CompiledModel({str(self.source_path)!r}, {state}, build_dir={self.build_dir})"


# ----------------------------------------------------------------------------- analysis

_ANALYSIS_CACHE: dict[ast.Neuron, NeuronIR] = {}  # frozen AST (with spans) -> IR


def analyze_cached(neuron: ast.Neuron) -> NeuronIR:
    from .analysis import analyze_neuron

    if neuron not in _ANALYSIS_CACHE:
        _ANALYSIS_CACHE[neuron] = analyze_neuron(neuron)
    return _ANALYSIS_CACHE[neuron]


def analyze_module(module: ast.Module, sources: Optional[dict[str, str]] = None
                   ) -> tuple[dict[str, NeuronIR], dict[str, NetworkIR]]:
    """Analyse every visible neuron and every network of a checked module. Raises DiagnosticError
    (E06x, or the dsl codes the analysis repeats defensively); `sources` (file -> text) lets the
    diagnostics show the offending line, else the files are read again."""
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
        raise DiagnosticError(diags, sources if sources is not None else sources_of(diags))
    return neurons, networks


def _internal(what: str, exc: BaseException, span) -> Diagnostic:
    msg = (str(exc).strip().splitlines() or [""])[0][:300]
    return Diagnostic("E064", f"internal compiler error while analysing {what}: {type(exc).__name__}: {msg}",
                      span, "this is a bug in spikescan; please report it with this file")


def load_model(path) -> CompiledModel:
    """Parse, check and analyse a .snn file (and its imports); nothing is written."""
    module, sources = load_with_sources(str(path))
    return CompiledModel(path, module=module, sources=sources).analyse()


# ----------------------------------------------------------------------------- sources and hash


def cache_root(out_dir=None) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    return Path(os.environ.get("SPIKESCAN_CACHE") or "./.spikescan-cache")


def source_texts(sources: dict[str, str]) -> tuple[dict[Path, bytes], Path]:
    """The loader's texts keyed by resolved path (main file first) and their common folder."""
    files = {Path(name).resolve(): text.encode("utf-8") for name, text in sources.items()}
    base = Path(os.path.commonpath([str(f.parent) for f in files]))
    return files, base


def content_hash(files: dict[Path, bytes], base: Path, emit, dtype: str) -> str:
    """Hash of the compiler version, the options and every source (path relative to `base`)."""
    h = hashlib.sha256()
    h.update(f"spikescan {__version__} abi {COMPILER_ABI}\n".encode())
    h.update(f"emit={','.join(sorted(emit))} dtype={dtype}\n".encode())
    for f, data in files.items():
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
    if isinstance(exc, ImportError):  # the backend module or what it needs (torch-mlir, triton)
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
    """Compile to `<cache root>/<hash>/`. The hash comes first (sources read and checked by the
    dsl, imports, version, options); on a hit nothing is analysed or generated (the returned
    model analyses on first use). A bad file raises DiagnosticError and never touches the cache."""
    progress = progress or (lambda s: None)
    emit = tuple(emit)
    bad = [e for e in emit if e not in BACKENDS]
    if bad or dtype not in DTYPES:
        raise ValueError(f"emit must be a subset of {BACKENDS} (got {emit}); dtype one of {DTYPES} (got {dtype!r})")
    module, sources = load_with_sources(str(path))
    files, base = source_texts(sources)
    key = content_hash(files, base, emit, dtype)
    root = cache_root(out_dir)
    build = root / key
    model = CompiledModel(path, module=module, sources=sources)
    if (build / "manifest.json").is_file() and not force:
        progress(f"cache hit: {build}")
        model.build_dir, model.manifest, model.cache_hit = build, json.loads((build / "manifest.json").read_text()), True
        return model
    model.analyse()  # analysis diagnostics before anything is written

    progress(f"compiling {path} -> {build}")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{key}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir(parents=True)
    try:
        manifest = _write_build(model, files, base, key, emit, dtype, tmp, progress)
        _publish(tmp, build, force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    progress(f"wrote {build}")
    model.build_dir, model.manifest = build, manifest
    return model


def _write_build(model: CompiledModel, files: dict[Path, bytes], base: Path, key: str, emit, dtype: str,
                 folder: Path, progress) -> dict:
    """Sources, artifacts and manifest.json into `folder`; DiagnosticError (E062) if a backend fails."""
    sources = {}
    for f, data in files.items():
        rel = f.relative_to(base).as_posix()
        dst = folder / "src" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        sources[rel] = _sha(data)
    manifest = {
        "spikescan_version": __version__,
        "compiler_abi": COMPILER_ABI,
        "hash": key,
        "source": next(iter(files)).relative_to(base).as_posix(),
        "sources": sources,
        "dtype": dtype,
        "emit": list(emit),
        "neurons": {},
        "networks": {n: _network_summary(net) for n, net in model.networks.items()},
        "hashes": {},
    }
    visible = dict(model.module.visible_neurons, **{n.name: n for n in model.module.neurons})
    diags = []
    for name in _main_neurons(model):
        ir = model.neurons[name]
        summary = _neuron_summary(ir)
        for backend in emit:
            progress(f"  {name}: {backend}")
            try:
                summary["kernels"].update(_emit_one(ir, backend, dtype, folder))
            except DiagnosticError:
                raise
            except Exception as exc:  # noqa: BLE001 - any backend failure becomes a diagnostic
                diags.append(_backend_error(name, backend, exc, visible[name].name_span).diagnostic)
        manifest["neurons"][name] = summary
    if diags:
        raise DiagnosticError(diags, model.sources)
    for f in sorted(folder.glob("*")):
        if f.is_file():
            manifest["hashes"][f.name] = _sha(f.read_bytes())
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest


def _publish(tmp: Path, build: Path, force: bool) -> None:
    """Rename the finished folder into place; a concurrent identical build that won keeps its folder."""
    finished_elsewhere = (build / "manifest.json").is_file() and not force
    if finished_elsewhere:
        return
    if build.exists():
        shutil.rmtree(build, ignore_errors=True)  # --force, or a broken folder without manifest
    try:
        os.replace(tmp, build)
    except OSError:  # another process won the race with an identical build: keep theirs
        if not (build / "manifest.json").is_file():
            raise


def _main_neurons(model: CompiledModel) -> list[str]:
    """Neurons defined in the main file or used by one of its networks (these get kernels)."""
    names = [n.name for n in model.module.neurons]
    for net in model.networks.values():
        names += [l.neuron for l in net.layers if l.neuron not in names]
    return names or list(model.neurons)


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
