"""The commands people type: ``cli`` (``autograder ...``), ``build`` (Gradescope zip, student kit),
``batch`` (a class's export, locally or on Slurm), ``bench_flash``, ``experiments``, ``gradescope``
(run_autograder's entry point) and ``container`` (the limits of the machine it runs in)."""
