"""Models: a name for each parameter, a default start, and f(params, x) in JAX.

``registry`` parses model specifications and lists them without importing JAX; the model
classes (``polynomial``, ``chebyshev``, ``rational``, ``expression``) import it; ``tape`` turns
a formula into data that one compiled solver runs.
"""
