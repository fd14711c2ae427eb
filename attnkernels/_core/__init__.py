"""What the families share: extension loading, backend choice, mode codes,
the Family record, helpers for ops, Triton kernels, modules and conversion
(docs/architecture.md). Names no family."""
