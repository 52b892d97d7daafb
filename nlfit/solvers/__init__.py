"""Solvers = direction x globalization over one iteration loop.

``directions``     steepest descent, Newton, Gauss-Newton, Levenberg-Marquardt
``globalization``  none (fixed step), backtracking line search, trust region
``subproblems``    the linear algebra both share (SVD / eigen forms, the trust-region
                   secular equation, dogleg, Cauchy point)
``termination``    the stopping rule: one pure function for the start and every iteration
``loop``           the one jitted iteration (state -> state) and the Python driver
``status``         why a run ended

Method and globalization names are listed in ``catalog`` without importing JAX.

The split (after optimistix's descent x search and Ceres' ComputeStep / StepAccepted):

- A **direction** answers questions about its local model: ``full_step`` (the step it takes as
  it comes, or for a line search ``descent_step``), ``trust_region_step`` (a step for a given
  radius), ``predicted_decrease`` (default: the Gauss-Newton model), ``gradient_measure``.
  It owns its damping, if it has one: ``accepts``, ``adapt_damping``, ``exhausted`` and
  ``region_damping`` (LM's Marquardt and Nielsen rules live in ``LevenbergMarquardt``).
- A **globalization** decides the size of the move and whether to accept it, from function
  values and the direction's answers (``propose``). It knows no direction by name.
- The **loop** accepts or rejects, re-linearizes, records the history and asks
  ``termination`` for the status. It tests no name strings.

A new direction is one frozen dataclass subclassing ``Direction`` with a ``name``
(``tests/test_new_direction.py`` runs a toy one, defined in the test, through all three
globalizations); ``make_direction`` finds it by that name. To offer it as ``--method NAME``
it also needs its entries in ``catalog`` (its name and aliases, its description and those of
its cells), which the command line reads without importing JAX. A new globalization is
likewise one subclass of ``Globalization`` with a ``name`` and ``propose``, plus its entries
in ``catalog``.
"""
