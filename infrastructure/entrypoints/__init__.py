"""How a process is started: the command line, the audit commands and the ASGI factories."""
