"""The MLIR backend: func/arith/math/scf/memref/vector modules generated from the NeuronIR with
torch-mlir's Python bindings, lowered to LLVM and JIT-compiled for the CPU (cpu_jit.py).
emit.py and ops.py print the IR's formulas; shared.py (event-outer forward), adjoint*.py,
readout*.py, recurrent*.py and sparse*.py build the engines' loops from them."""
