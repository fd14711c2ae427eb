"""Fake (meta) implementations and autograd for the compiled operators."""
