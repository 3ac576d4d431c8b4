"""The ``lookalike`` command line: an adapter over the core (``services``) that also runs the
local stack (``cli.stack``). The console command is :data:`cli.app.app`."""
