"""A WebSocket server for testing chatgate's WebSocket client, built on
Debian's python3-websockets (not on any chatgate code). The path picks the
behaviour:

  /echo        echoes every message with its type
  /fragmented  sends "alpha-beta-gamma" as three fragments, then echoes
  /big         sends a 1 MiB binary message (bytes i % 251), then echoes
  /ping        pings the client with b"are-you-there"; when the pong
               arrives, sends the text "pong received"
  /close       closes at once with code 4001 and reason "bye now"
  /vanish      sends half a 4 KiB binary frame, then drops the TCP connection
  /silent      reads nothing and sends nothing after the upgrade
  /reject      refuses the upgrade with HTTP 403
  /headers     sends the upgrade request's X-Probe header back as text

Usage: fake_ws.py [--tls CERT KEY]. Prints "PORT n" once listening.
"""
import asyncio
import http
import ssl
import sys

import websockets


async def handler(ws, path):
    if path == "/fragmented":
        await ws.send(["alpha-", "beta-", "gamma"])
    elif path == "/big":
        await ws.send(bytes(i % 251 for i in range(1 << 20)))
    elif path == "/ping":
        waiter = await ws.ping(b"are-you-there")
        await asyncio.wait_for(waiter, 5)
        await ws.send("pong received")
    elif path == "/close":
        await ws.close(4001, "bye now")
        return
    elif path == "/vanish":
        # A frame header announcing 4096 bytes, 100 of them, then a reset.
        ws.transport.write(b"\x82\x7e\x10\x00" + b"x" * 100)
        await asyncio.sleep(0.05)
        ws.transport.abort()
        return
    elif path == "/silent":
        ws.transport.pause_reading()
        await asyncio.sleep(3600)
        return
    elif path == "/headers":
        await ws.send(ws.request_headers.get("X-Probe", "(none)"))
    async for message in ws:
        await ws.send(message)


async def process_request(path, headers):
    if path == "/reject":
        return http.HTTPStatus.FORBIDDEN, [("Content-Type", "text/plain")], b"no entry\n"
    return None


async def main():
    ctx = None
    if len(sys.argv) == 4 and sys.argv[1] == "--tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    async with websockets.serve(handler, "127.0.0.1", 0, ssl=ctx, max_size=None,
                                process_request=process_request,
                                # No server-initiated keepalive pings: the
                                # tests ping on purpose.
                                ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        print("PORT %d" % port, flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
