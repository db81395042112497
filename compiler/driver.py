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
concurrent compiles never see half a build (build_cache.py: verification, publishing, cleaning
of folders left by killed compiles). The hash is computed before the analysis: a cache hit,
once its folder is verified against its manifest, neither analyses nor runs a backend.
Errors of the file, the analysis or a backend raise spikescan.dsl DiagnosticError.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

from spikescan import __version__
from spikescan.dsl import ast
from spikescan.dsl.diagnostics import Diagnostic, DiagnosticError
from spikescan.dsl.loader import load_with_sources, sources_of

from . import build_cache as bc
from .errors import BuildFolderError, CompileError
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
        from . import psn

        discrete = {d.name: d for d in module.discrete_neurons}
        for net in module.networks:
            try:
                if psn.is_discrete(net, discrete):
                    networks[net.name] = psn.analyze_network(net, discrete)
                    continue
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
                        **({"conv": vars(c.conv).copy()} if getattr(c, "conv", None) is not None else {}),
                        **({"k": c.k, "seed": c.seed} if c.kind == "sparse" else {}),
                    }
                    for c in l.connections
                ],
            }
            for l in net.layers
        ],
        "readout": None if net.readout is None else
        {"layer": net.readout.layer, "kind": net.readout.kind, "args": dict(net.readout.args)},
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


def _emit_one(ir: NeuronIR, backend: str, dtype: str) -> dict[str, tuple[str, Optional[str]]]:
    """One backend's artifact for one neuron: {kind: (filename, text)}; nothing is written here,
    so that a full disk is reported as such and not as a backend failure."""
    if backend == "mlir":
        from .backends.mlir.emit import emit_module

        return {"mlir": (f"{ir.name}.{dtype}.mlir", emit_module(ir, dtype))}
    if backend == "triton":
        from .backends.triton.codegen import generate

        return {"triton": (f"{ir.name}_triton.py", generate(ir, dtype))}
    if backend == "cpu":
        # The CPU JIT compiles the MLIR in memory at run time; here we check that it lowers.
        from .backends.mlir import cpu_jit

        if hasattr(cpu_jit, "check_lowering"):
            cpu_jit.check_lowering(ir, dtype)
        elif hasattr(cpu_jit, "compile_neuron"):
            cpu_jit.compile_neuron(ir, dtype)
        return {"cpu": ("jit", None)}
    raise ValueError(backend)


def compile_model(path, out_dir=None, emit=BACKENDS, dtype: str = "f64", force: bool = False,
                  progress: Optional[Callable[[str], None]] = print) -> CompiledModel:
    """Compile to `<cache root>/<hash>/`. The hash comes first (sources read and checked by the
    dsl, imports, version, options); on a hit, after build_cache.verify, nothing is analysed or
    generated (the returned model analyses on first use); a folder that fails verification is
    rebuilt. A bad file raises DiagnosticError and never touches the cache; a folder that cannot
    be written raises BuildFolderError (one line)."""
    progress = progress or (lambda s: None)
    emit = tuple(emit)
    bad = [e for e in emit if e not in BACKENDS]
    if bad or dtype not in DTYPES:
        raise ValueError(f"emit must be a subset of {BACKENDS} (got {emit}); dtype one of {DTYPES} (got {dtype!r})")
    emit = tuple(b for b in BACKENDS if b in emit)  # one order: the manifest is the same for every spelling
    module, sources = load_with_sources(str(path))
    files, base = source_texts(sources)
    key = content_hash(files, base, emit, dtype)
    root = cache_root(out_dir)
    build = root / key
    model = CompiledModel(path, module=module, sources=sources)
    if not force:
        manifest, why = _verify(build, key, files, base, emit, dtype)
        if manifest is not None:
            progress(f"cache hit: {build}")
            model.build_dir, model.manifest, model.cache_hit = build, manifest, True
            return model
        if build.exists() or build.is_symlink():
            progress(f"cache entry {build} is not valid ({why}): rebuilding")
    model.analyse()  # analysis diagnostics before anything is written
    progress(f"compiling {path} -> {build}")
    manifest = _build(model, files, base, key, emit, dtype, root, force, progress)
    progress(f"wrote {build}")
    model.build_dir, model.manifest = build, manifest
    return model


def _recorded_sources(files: dict[Path, bytes], base: Path) -> dict[str, str]:
    return {f.relative_to(base).as_posix(): bc.sha(data) for f, data in files.items()}


def _verify(build: Path, key: str, files, base: Path, emit, dtype: str):
    return bc.verify(build, key, _recorded_sources(files, base), emit, dtype, __version__, COMPILER_ABI)


def _build(model: CompiledModel, files, base: Path, key: str, emit, dtype: str, root: Path, force: bool,
           progress) -> dict:
    """Write the build into a temporary folder of `root` and rename it into place."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        bc.clean_stale(root)  # folders of compiles that were killed
        tmp = bc.tmp_folder(root, key)
        tmp.mkdir()
    except OSError as e:
        raise _write_error(root, e) from e
    try:
        manifest = _write_build(model, files, base, key, emit, dtype, tmp, progress)
        if force or _verify(root / key, key, files, base, emit, dtype)[0] is None:
            bc.publish(tmp, root / key)  # else a concurrent identical build won: keep it
    except OSError as e:
        raise _write_error(root, e) from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _write_error(root: Path, e: OSError) -> BuildFolderError:
    if isinstance(e, FileExistsError) and root.exists() and not root.is_dir():
        reason = "it is a file, not a folder"
    elif isinstance(e, NotADirectoryError):
        reason = "part of the path is a file, not a folder"
    else:
        reason = e.strerror or str(e) or type(e).__name__
    return BuildFolderError(f"cannot write the build folder under '{root}': {reason}")


def _write_build(model: CompiledModel, files: dict[Path, bytes], base: Path, key: str, emit, dtype: str,
                 folder: Path, progress) -> dict:
    """Sources, artifacts and manifest.json into `folder`; DiagnosticError (E062) if a backend
    fails, OSError if the folder cannot be written."""
    for f, data in files.items():
        dst = folder / "src" / f.relative_to(base).as_posix()
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
    manifest = {
        "spikescan_version": __version__,
        "compiler_abi": COMPILER_ABI,
        "hash": key,
        "source": next(iter(files)).relative_to(base).as_posix(),
        "sources": _recorded_sources(files, base),
        "dtype": dtype,
        "emit": list(emit),
        "neurons": {},
        "networks": {n: _network_summary(net) for n, net in model.networks.items()},
        "hashes": {},
    }
    visible = dict(model.module.visible_neurons, **{n.name: n for n in model.module.neurons})
    diags, artifacts = [], {}
    for name in _main_neurons(model):
        ir = model.neurons[name]
        summary = _neuron_summary(ir)
        for backend in emit:
            progress(f"  {name}: {backend}")
            try:
                out = _emit_one(ir, backend, dtype)
            except DiagnosticError:
                raise
            except Exception as exc:  # noqa: BLE001 - any backend failure becomes a diagnostic
                diags.append(_backend_error(name, backend, exc, visible[name].name_span).diagnostic)
                continue
            summary["kernels"].update({kind: fname for kind, (fname, _) in out.items()})
            artifacts.update({fname: text for fname, text in out.values() if text is not None})
        manifest["neurons"][name] = summary
    if diags:
        raise DiagnosticError(diags, model.sources)
    for fname, text in sorted(artifacts.items()):
        data = text.encode()
        (folder / fname).write_bytes(data)
        manifest["hashes"][fname] = bc.sha(data)
    manifest = bc.seal(manifest)
    (folder / bc.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest


def _main_neurons(model: CompiledModel) -> list[str]:
    """Neurons defined in the main file or used by one of its networks (these get kernels),
    each once however many layers use it."""
    names = dict.fromkeys(n.name for n in model.module.neurons)
    for net in model.networks.values():
        names.update(dict.fromkeys(l.neuron for l in net.layers))
    return list(names) or list(model.neurons)


def load_compiled(build_dir) -> CompiledModel:
    """Read a build folder back: manifest plus a fresh analysis of its stored sources. The folder
    is verified first (BuildFolderError if it is not a complete, unmodified build)."""
    build = Path(build_dir)
    man, why = bc.read_manifest(build)
    if man is not None:
        src = build / "src"
        files = {src / rel: (src / rel).read_bytes() if (src / rel).is_file() else b""
                 for rel in (man.get("sources") or {}) if bc._safe_rel(rel)}
        if not files or man.get("hash") != content_hash(files, src, man.get("emit", ()), str(man.get("dtype"))):
            why = "its sources do not match its hash (modified, or built by another spikescan version)"
        else:
            man, why = _verify(build, man["hash"], files, src, man["emit"], man["dtype"])
    if man is None:
        raise BuildFolderError(f"{build} is not a valid spikescan build folder: {why}")
    model = load_model(build / "src" / man["source"])
    model.build_dir, model.manifest = build, man
    return model
