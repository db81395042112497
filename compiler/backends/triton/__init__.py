"""The Triton backend: Python source of Triton kernels generated from the NeuronIR (codegen.py,
kernels.py, adjoint.py, ports.py, printer.py, inline.py) and the fixed PSN kernels (psn.py).
Imported lazily by the runtime: the rest of spikescan works without triton installed."""
