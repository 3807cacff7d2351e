"""The tasks: one module per task family, each composing models, data, engines and handlers on the standard run.

``tasks.standard_run`` is the run every task shares; a task module says only what differs for its task: settings,
data, networks, engine, quality measure and sub-commands. Launchers (``scripts/``) hand their command line to a
task through ``runner.cli``.
"""
