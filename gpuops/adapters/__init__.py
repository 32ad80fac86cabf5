"""Framework adapters: torch.py (PyTorch ops) and jax.py (JAX custom_vjp ops).  No math lives here."""
