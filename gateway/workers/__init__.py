"""``mdeploy serve --workers N``: N gateway processes on the same ports, under one supervisor.

``supervisor`` (in the ``mdeploy serve`` process) holds the ports, starts, restarts and stops the
workers; ``worker`` is a worker's main; ``control`` is the line protocol between the two.
"""
