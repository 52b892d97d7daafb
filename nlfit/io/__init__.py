"""Reading data in and writing results out. Nothing here imports JAX."""
