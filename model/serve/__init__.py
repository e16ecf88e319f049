"""The local back-end worker: ``python -m model serve`` and the client that talks to it.

One worker process loads a checkpoint once and serves generation requests from any
number of Blender sessions of the same user, one job at a time (FIFO), over HTTP on the
loopback address. Only `server` imports torch; `session`, `protocol`, `client` and
`launch` are stdlib + numpy, so the Blender side uses them without loading torch.

    session.py   where the worker's port and token live (a file only its user can read)
    protocol.py  requests, limits, errors and the motion payload, shared by both ends
    jobs.py      the job queue: one thread runs jobs in order, with progress and cancel
    server.py    the HTTP server (loopback only, token checked on every request)
    client.py    a client of one worker
    launch.py    start a worker, reuse a running one, restart a dead one
"""
