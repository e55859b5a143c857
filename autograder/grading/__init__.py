"""The pytest side of grading: turns a submission into results.json.

``runner`` (plans the run, starts pytest, assembles results whatever happens to it), ``hostserver``
(pytest as a fork of a warm process, for batches), ``plugin`` (fixtures, per-test records, the
deadline), ``records``, ``scoring`` (records into results), ``results`` (Gradescope's schema),
``report`` (the console), ``manifest`` (every test with its points), ``golden`` (reference values
recorded for the student kit), ``submission`` (what is copied from an upload).
"""
