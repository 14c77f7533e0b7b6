"""A floor for bench_share: the least an HTTP/1.1 proxy framed by tornado does per request (what the gateway is built
on): tornado frames each request, one upstream connection pinned to each visitor connection, the response head read
with read_until and its Content-Length body relayed. No gate, no checks, no rewriting: nothing the gateway adds.

Run: python tornado_proxy.py UPSTREAM_PORT  (prints the port it listens on)
"""
import asyncio, socket, sys
from tornado import httputil
from tornado.http1connection import HTTP1ServerConnection, HTTP1ConnectionParameters
from tornado.iostream import IOStream

UP = int(sys.argv[1])

class Conn(httputil.HTTPServerConnectionDelegate):
    def __init__(self, stream):
        self.stream, self.up = stream, None
    def start_request(self, server_conn, request_conn):
        return Ex(self, request_conn)
    def on_close(self, server_conn):
        if self.up: self.up.close()

class Ex(httputil.HTTPMessageDelegate):
    def __init__(self, conn, rc):
        self.conn, self.rc = conn, rc
    async def headers_received(self, start_line, headers):
        self.head = (f"{start_line.method} {start_line.path} {start_line.version}\r\n" +
                     "".join(f"{k}: {v}\r\n" for k, v in headers.get_all()) + "\r\n").encode("latin-1")
    def data_received(self, chunk): pass
    def finish(self):
        asyncio.ensure_future(self.go())
    async def go(self):
        c = self.conn
        if c.up is None:
            c.up = IOStream(socket.socket()); await c.up.connect(("127.0.0.1", UP)); c.up.set_nodelay(True)
        await c.up.write(self.head)
        head = await c.up.read_until(b"\r\n\r\n")
        n = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"): n = int(line.split(b":")[1])
        body = await c.up.read_bytes(n) if n else b""
        await c.stream.write(head + body)
        self.rc.finish()

async def main():
    params = HTTP1ConnectionParameters(chunk_size=256 * 1024, max_header_size=65536, header_timeout=30,
                                       decompress=False)
    lsock = socket.socket(); lsock.bind(("127.0.0.1", 0)); lsock.listen(128); lsock.setblocking(False)
    print(lsock.getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    while True:
        s, _ = await loop.sock_accept(lsock)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        st = IOStream(s)
        HTTP1ServerConnection(st, params).start_serving(Conn(st))
asyncio.run(main())
