"""The link between Blender and the back-end worker (stdlib + numpy: the add-on uses it).

    protocol.py   requests, limits, job states and the motion payload, shared by both ends
    session.py    where the worker's port and token live (a file only its user can read)
    client.py     a client of one worker
    launch.py     start a worker, reuse a running one, restart a dead one
    processes.py  is a process (with its start time) still alive

The worker itself, which loads torch, is `model.serve`.
"""
