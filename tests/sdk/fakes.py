"""Fake transports for the SDK's sans-I/O tests."""

import threading

from gcl._wire import Response


class ParkedTransport:
    """A server that parks every acquisition until its ticket is withdrawn (DELETE), then answers 423."""

    def __init__(self, park_seconds):
        self.sent, self.parked, self.withdrawn = [], threading.Event(), threading.Event()
        self.park_seconds = park_seconds

    def send(self, req):
        self.sent.append(req)
        if req.method == "DELETE":
            self.withdrawn.set()
            return Response(204, {}, None)
        self.parked.set()
        self.withdrawn.wait(self.park_seconds)  # the server ends the parked request once it is withdrawn
        return Response(423, {}, {"message": "withdrawn"})

    def close(self):
        pass
