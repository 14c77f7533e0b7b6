"""A floor for bench_share: the least an HTTP/1.1 proxy framed by httptools (llhttp, in C) on asyncio Protocols does
per request -- uvicorn's shape: one Protocol per connection, the parser a library, one upstream connection pinned to
each visitor connection, the response relayed as it comes. No gate, no checks, no rewriting.

Run: python httptools_proxy.py UPSTREAM_PORT  (prints the port it listens on; needs `pip install httptools`)
"""
import asyncio, socket, sys
import httptools

UP = int(sys.argv[1])

class Upstream(asyncio.Protocol):
    def __init__(self, visitor):
        self.visitor = visitor
        self.parser = httptools.HttpResponseParser(self)
    def connection_made(self, transport):
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def data_received(self, data):
        self.visitor.transport.write(data)
        self.parser.feed_data(data)
    def on_message_complete(self):
        self.visitor.done()

class Visitor(asyncio.Protocol):
    def __init__(self):
        self.parser = httptools.HttpRequestParser(self)
        self.up = None
        self.queue = []
        self.busy = False
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.parser.feed_data(data)
    def on_message_begin(self):
        self.headers = []
    def on_url(self, url):
        self.url = url
    def on_header(self, name, value):
        self.headers.append((name, value))
    def on_message_complete(self):
        head = b"%s %s HTTP/1.1\r\n" % (self.parser.get_method(), self.url) + b"".join(
            b"%s: %s\r\n" % h for h in self.headers) + b"\r\n"
        self.queue.append(head)
        if not self.busy:
            asyncio.ensure_future(self.send())
    async def send(self):
        self.busy = True
        if self.up is None:
            loop = asyncio.get_running_loop()
            _, self.up = await loop.create_connection(lambda: Upstream(self), "127.0.0.1", UP)
        self.up.transport.write(self.queue.pop(0))
    def done(self):
        self.busy = False
        if self.queue:
            asyncio.ensure_future(self.send())

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Visitor, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
