"""Which of some file descriptors are readable, with poll(): select() fails for any descriptor past 1023."""

import select

READABLE = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR


def readable(objs, timeout):
    """The objects among objs (sockets, connections or fds) readable within timeout seconds (also at EOF or on an
    error, as select() reports them). A closed one raises ValueError, as with select()."""
    poller = select.poll()
    by_fd = {}
    for obj in objs:
        fd = obj if isinstance(obj, int) else obj.fileno()
        if fd < 0:
            raise ValueError(f"{obj!r} is closed")
        by_fd[fd] = obj
        poller.register(fd, READABLE)
    ready = []
    for fd, event in poller.poll(max(timeout, 0.0) * 1000.0):
        if event & select.POLLNVAL:
            raise ValueError(f"{by_fd[fd]!r} is not an open file descriptor")
        ready.append(by_fd[fd])
    return ready
