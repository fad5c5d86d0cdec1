"""``nsmctl``: the operator's command line for the fabric.

The root command and its global options live in :mod:`nsmctl.app`; each command group is a module
with a ``register(app)`` function (:mod:`nsmctl.registry_cmds` for get/describe/apply/delete).
"""
