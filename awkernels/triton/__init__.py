"""The `triton` backend: Triton kernels registered as torch custom ops (`awnet::*_triton`).

On a machine without a GPU the kernels run under the interpreter (TRITON_INTERPRET=1) on CPU tensors.
"""
