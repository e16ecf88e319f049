"""The local back-end worker: ``python -m model serve``.

One worker process loads a checkpoint once and serves generation requests from any
number of Blender sessions of the same user, one job at a time (FIFO), over HTTP on the
loopback address. What its clients need (protocol, session file, client, launcher) is
`model.link`, which never imports torch.

    jobs.py      the job queue: one thread runs jobs in order, with progress and cancel
    server.py    the HTTP server (loopback only, token checked on every request)
"""
