"""Triton kernels, one file per family (kernels -> launchers -> op registration).
Imported lazily: only when the triton backend is used."""
