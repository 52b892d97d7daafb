"""Solvers = direction x globalization over one iteration loop.

``directions``     steepest descent, Newton, Gauss-Newton, Levenberg-Marquardt
``globalization``  none (fixed step), backtracking line search, trust region
``subproblems``    the linear algebra both share (SVD / eigen forms, the trust-region
                   secular equation, dogleg, Cauchy point)
``loop``           the one jitted step(state) -> state and the Python driver
``status``         why a run ended

Method and globalization names are listed in ``catalog`` without importing JAX.
"""
