"""deploy/compose/nginx.conf, compose.yaml's proxy in front of the web replicas.

Read as nginx reads it (a small parser of its syntax and of how it picks a location), then
checked by Debian's nginx: `nginx -t` on the file as shipped, and the file run for real with
only its addresses changed: Docker's DNS (127.0.0.11) becomes a stub that answers `web` with
the replicas a test chooses, and each replica is a small HTTP server on its own loopback
address. So what the proxy does is seen: websockets pass, Server-Sent Events are not held
back, replicas added later are found, and a replica that is gone is passed over.
"""

import http.client
import json
import re
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from manifests import PROXY_CONF, system_tool

DOCKER_DNS = "127.0.0.11"
SSE_PATH = "/api/v1/jobs/0123456789abcdef0123456789abcdef/events"
TOKEN = re.compile(r'"[^"]*"|\'[^\']*\'|[{};]|[^\s{};]+')
UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list["Directive"] | None = None

    def all(self, name: str) -> list["Directive"]:
        return [d for d in self.block or [] if d.name == name]

    def one(self, name: str) -> "Directive":
        (directive,) = self.all(name)
        return directive

    def value(self, name: str) -> str | None:
        """The argument of a one-argument directive written at this level, or None."""
        found = self.all(name)
        return found[0].args[0] if found else None


def parse(text: str) -> Directive:
    """nginx's configuration syntax: `name args;` and `name args { ... }`, `#` comments."""
    lines = [re.sub(r"(^|\s)#.*", "", line) for line in text.splitlines()]
    tokens = [t.strip("\"'") if t[0] in "\"'" else t for t in TOKEN.findall("\n".join(lines))]
    root = Directive("main", [], [])
    stack, words = [root], []
    for token in tokens:
        if token == ";":
            stack[-1].block.append(Directive(words[0], words[1:]))
            words = []
        elif token == "{":
            directive = Directive(words[0], words[1:], [])
            stack[-1].block.append(directive)
            stack.append(directive)
            words = []
        elif token == "}":
            assert not words, words
            stack.pop()
        else:
            words.append(token)
    assert len(stack) == 1 and not words, "unbalanced braces or a directive without `;`"
    return root


def config() -> Directive:
    return parse(PROXY_CONF.read_text())


def server() -> Directive:
    return config().one("server")


def location_for(uri: str, in_server: Directive | None = None) -> Directive:
    """The location nginx picks for `uri`: an exact match, else the longest prefix, unless it is
    `^~` or a regex matches (the first, in order), as nginx's documentation describes."""
    locations = (in_server or server()).all("location")
    for location in locations:
        if location.args[0] == "=" and location.args[1] == uri:
            return location
    prefixes = [loc for loc in locations if len(loc.args) == 1 or loc.args[0] == "^~"]
    longest = max(
        (loc for loc in prefixes if uri.startswith(loc.args[-1])), key=lambda loc: len(loc.args[-1])
    )
    if longest.args[0] == "^~":
        return longest
    for location in locations:
        if location.args[0] in ("~", "~*"):
            flags = re.IGNORECASE if location.args[0] == "~*" else 0
            if re.search(location.args[1], uri, flags):
                return location
    return longest


def setting(uri: str, name: str) -> str | None:
    """A directive's value for `uri`: its location's, else inherited from the server."""
    return location_for(uri).value(name) or server().value(name)


def seconds(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(s|m|h)?", value).groups()
    return int(number) * {"s": 1, None: 1, "m": 60, "h": 3600}[unit]


def upstream_variable() -> str:
    """The variable every location proxies to (set once in the server)."""
    (assignment,) = server().all("set")
    return assignment.args[0]


def test_listens_on_the_one_port_and_proxies_everything_to_web() -> None:
    assert server().all("listen")[0].args == ["3000"]
    (assignment,) = server().all("set")
    assert assignment.args == ["$web_upstream", "http://web:3000"]
    assert not config().all("upstream")  # an upstream block would resolve `web` once, at start
    for uri in ("/", "/_event/", "/api/v1/jobs", SSE_PATH, "/images/a.png", "/healthz", "/readyz"):
        assert location_for(uri).all("proxy_pass")[0].args == [upstream_variable()], uri
    every = [d for loc in server().all("location") for d in loc.all("proxy_pass")]
    assert {tuple(d.args) for d in every} == {(upstream_variable(),)}


def test_web_is_resolved_again_through_docker_dns() -> None:
    """A variable in proxy_pass is resolved per request, through the resolver: scaled replicas are
    found within `valid`."""
    (resolver,) = server().all("resolver")
    assert resolver.args[0] == DOCKER_DNS
    options = dict(arg.split("=", 1) for arg in resolver.args[1:])
    assert seconds(options["valid"]) <= 30
    assert options.get("ipv6") == "off"  # Docker's compose network: IPv4 addresses only


def test_websockets_pass_with_long_timeouts() -> None:
    headers = {d.args[0]: d.args[1] for d in server().all("proxy_set_header")}
    assert headers["Upgrade"] == "$http_upgrade"
    assert headers["Connection"] == "$connection_upgrade"
    assert headers["Host"] == "$http_host"  # the page's origin, as the browser sent it
    (upgrade_map,) = config().all("map")
    assert upgrade_map.args == ["$http_upgrade", "$connection_upgrade"]
    assert {(d.name, *d.args) for d in upgrade_map.block} == {
        ("default", "upgrade"),  # a websocket handshake
        ("", "close"),  # any other request
    }
    # A location that set headers of its own would inherit none of the server's.
    assert not [loc.args for loc in server().all("location") if loc.all("proxy_set_header")]
    assert server().value("proxy_http_version") == "1.1"
    assert location_for("/_event/").args == ["/_event"]
    assert seconds(setting("/_event/", "proxy_read_timeout")) >= 3600
    assert seconds(setting("/_event/", "proxy_send_timeout")) >= 3600


def test_server_sent_events_are_not_buffered() -> None:
    assert setting(SSE_PATH, "proxy_buffering") == "off"
    assert setting(SSE_PATH + "/more", "proxy_buffering") in (None, "on")  # only that route
    assert setting("/api/v1/jobs/abc", "proxy_buffering") in (None, "on")
    assert seconds(setting(SSE_PATH, "proxy_read_timeout")) >= 600


def test_long_requests_and_large_bodies_pass() -> None:
    """A synchronous API call waits up to API_WAIT_S (600 s) with nothing sent; uploads of a few
    MiB (base64 images) are let through to the app, whose own limit answers in JSON."""
    for uri in ("/sdapi/v1/txt2img", "/v1/images/generations", "/api/v1/jobs"):
        assert seconds(setting(uri, "proxy_read_timeout")) > 600, uri
    number, unit = re.fullmatch(
        r"(\d+)([kmg]?)", server().value("client_max_body_size").lower()
    ).groups()
    assert int(number) * UNITS[unit] >= 2 * 1024**2


def test_the_location_rules_are_nginx_s() -> None:
    """parse() and location_for() themselves, on a location of each kind."""
    sample = parse(
        """server {
            location / { a 1; }  # a comment
            location /api { a 2; }
            location ^~ /api/static { a 3; }
            location ~ ^/api/.+/events$ { a 4; }
            location = /api { a 5; }
            set $v "http://x:1";
        }"""
    ).one("server")
    assert sample.value("set") == "$v"
    assert sample.one("set").args == ["$v", "http://x:1"]
    for uri, picked in [
        ("/", "1"),
        ("/images/x.png", "1"),
        ("/api/v1", "2"),
        ("/api", "5"),
        ("/api/v1/jobs/1/events", "4"),
        ("/api/static/events", "3"),
    ]:
        assert location_for(uri, sample).value("a") == picked, uri


# ---- nginx itself ---------------------------------------------------------------------------


def main_config(directory: Path, server_config: Path) -> Path:
    """An nginx.conf that includes `server_config` inside its http block, as the image's does
    with conf.d/, running in the foreground in `directory`."""
    main = directory / "nginx.conf"
    temp = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main.write_text(
        f"""daemon off;
master_process off;
error_log {directory / "error.log"} info;
pid {directory / "nginx.pid"};
events {{ worker_connections 256; }}
http {{
    access_log off;
{temp}
    include {server_config};
}}
"""
    )
    return main


def test_nginx_accepts_the_config_as_shipped(tmp_path: Path) -> None:
    """`nginx -t`: the file parses, and needs neither `web` nor Docker's DNS to start."""
    nginx = system_tool("nginx", "nginx-light")
    main = main_config(tmp_path, PROXY_CONF)
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-e", "stderr", "-c", str(main)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


class DnsStub(threading.Thread):
    """A DNS server on 127.0.0.1 answering A queries for `web` with `addresses`, else NXDOMAIN."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.addresses: list[str] = []

    def run(self) -> None:
        while True:
            try:
                query, client = self.sock.recvfrom(512)
            except OSError:
                return
            self.sock.sendto(self.answer(query), client)

    def answer(self, query: bytes) -> bytes:
        labels, offset = [], 12
        while query[offset]:
            labels.append(query[offset + 1 : offset + 1 + query[offset]].decode())
            offset += 1 + query[offset]
        question = query[12 : offset + 5]
        qtype = int.from_bytes(query[offset + 1 : offset + 3], "big")
        name = ".".join(labels).lower()
        addresses = list(self.addresses) if name == "web" and qtype == 1 else []
        rcode = 0 if name == "web" else 3
        header = query[:2] + (0x8180 | rcode).to_bytes(2, "big")
        header += (1).to_bytes(2, "big") + len(addresses).to_bytes(2, "big") + bytes(4)
        records = b"".join(
            b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04" + socket.inet_aton(a)
            for a in addresses
        )
        return header + question + records

    def close(self) -> None:
        self.sock.close()


class ReplicaHandler(socketserver.StreamRequestHandler):
    """One request to a stand-in web replica: a websocket handshake is accepted and the socket
    echoed, the SSE route streams an event and holds the stream open, anything else is answered
    with what the replica saw, as JSON."""

    server: "Replica"

    def handle(self) -> None:
        request_line = self.rfile.readline().decode()
        if not request_line:
            return
        method, path, version = request_line.split()
        headers = {}
        while (line := self.rfile.readline().decode()) not in ("\r\n", "\n", ""):
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
        body = self.rfile.read(int(headers.get("content-length", 0)))
        if headers.get("upgrade", "").lower() == "websocket":
            # As a websocket server requires (RFC 6455, 4.1): HTTP/1.1 and `Connection: Upgrade`.
            connection = {token.strip().lower() for token in headers["connection"].split(",")}
            if version != "HTTP/1.1" or "upgrade" not in connection:
                self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            self.wfile.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: stub\r\n\r\n"
                + f"hello from {self.server.name}\n".encode()
            )
            while data := self.rfile.read1(4096):
                self.wfile.write(data)
            return
        if path == SSE_PATH:
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
                b'event: queued\ndata: {"state": "queued"}\n\n'
            )
            self.server.sse_release.wait(10)
            self.wfile.write(b'event: done\ndata: {"state": "done"}\n\n')
            return
        answer = json.dumps(
            {
                "replica": self.server.name,
                "method": method,
                "path": path,
                "headers": headers,
                "body_bytes": len(body),
            }
        ).encode()
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(answer)}\r\n\r\n".encode()
            + answer
        )


class Replica(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str, address: tuple[str, int]) -> None:
        super().__init__(address, ReplicaHandler)
        self.name = name
        self.sse_release = threading.Event()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.sse_release.set()
        self.shutdown()
        self.server_close()


@dataclass
class Proxy:
    port: int
    dns: DnsStub
    replicas: dict[str, Replica] = field(default_factory=dict)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            return response.status, json.loads(data) if response.status == 200 else {}
        finally:
            conn.close()

    def websocket(self) -> tuple[str, socket.socket]:
        """A websocket handshake on /_event as the page's Socket.IO client makes it; the replica
        that answered, and the open socket."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.sendall(
            b"GET /_event/?EIO=4&transport=websocket HTTP/1.1\r\n"
            + f"Host: 127.0.0.1:{self.port}\r\n".encode()
            + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        reader = sock.makefile("rb")
        status = reader.readline()
        assert status.startswith(b"HTTP/1.1 101 "), status
        while reader.readline() not in (b"\r\n", b""):
            pass
        hello = reader.readline().decode()
        assert hello.startswith("hello from "), hello
        sock.sendall(b"ping\n")
        assert reader.readline() == b"ping\n"  # both ways, through the tunnel
        return hello.removeprefix("hello from ").strip(), sock

    def replicas_seen(self, count: int) -> set[str]:
        seen = set()
        for _ in range(count):
            status, answer = self.request("GET", "/")
            assert status == 200
            seen.add(answer["replica"])
        return seen


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def rendered(config_text: str, replacements: dict[str, str]) -> str:
    """The shipped config with only its addresses changed (each written exactly once)."""
    for old, new in replacements.items():
        assert config_text.count(old) == 1, old
        config_text = config_text.replace(old, new)
    return config_text


def replicas() -> dict[str, Replica]:
    """Replicas `a` on 127.0.0.1 and `b` on 127.0.0.2, on one port as Docker's replicas are."""
    for _ in range(20):
        port = free_port("127.0.0.2")
        started: dict[str, Replica] = {}
        try:
            for name, host in (("a", "127.0.0.1"), ("b", "127.0.0.2")):
                started[name] = Replica(name, (host, port))
            return started
        except OSError:  # the port was taken on the other address
            for replica in started.values():
                replica.stop()
    raise AssertionError("no port free on both loopback addresses")


@contextmanager
def running_proxy(tmp_path: Path) -> Iterator[Proxy]:
    nginx = system_tool("nginx", "nginx-light")
    dns = DnsStub()
    dns.start()
    proxy = Proxy(free_port(), dns, replicas())
    replica_port = proxy.replicas["a"].server_address[1]
    server_config = tmp_path / "default.conf"
    valid = re.search(r"valid=(\w+)", PROXY_CONF.read_text()).group(0)
    server_config.write_text(
        rendered(
            PROXY_CONF.read_text(),
            {
                f"resolver {DOCKER_DNS} ": f"resolver 127.0.0.1:{dns.port} ",
                valid: "valid=1s",
                "listen 3000;": f"listen 127.0.0.1:{proxy.port};",
                "http://web:3000;": f"http://web:{replica_port};",
            },
        )
    )
    main = main_config(tmp_path, server_config)
    log = tmp_path / "error.log"
    process = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-e", str(log), "-c", str(main)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.1)
        yield proxy
    finally:
        process.terminate()
        process.wait(timeout=15)
        for replica in proxy.replicas.values():
            replica.stop()
        dns.close()


def test_nginx_proxies_http_websockets_and_events(tmp_path: Path) -> None:
    with running_proxy(tmp_path) as proxy:
        proxy.dns.addresses = ["127.0.0.1"]
        status, answer = proxy.request("GET", "/readyz")
        assert status == 200 and answer["replica"] == "a"
        assert answer["headers"]["host"] == f"127.0.0.1:{proxy.port}"
        assert answer["headers"]["x-forwarded-for"] == "127.0.0.1"
        assert answer["headers"]["x-forwarded-proto"] == "http"
        assert "upgrade" not in answer["headers"]
        # A body of a few MiB (an img2img request's base64 image) reaches the app whole.
        body = b"x" * (3 * 1024**2)
        status, answer = proxy.request(
            "POST", "/sdapi/v1/img2img", body, {"Content-Type": "application/json"}
        )
        assert (status, answer["body_bytes"]) == (200, len(body))
        # The websocket is upgraded and stays open both ways.
        name, sock = proxy.websocket()
        assert name == "a"
        sock.close()
        # The first event of a job arrives while the replica still holds the stream open.
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        conn.request("GET", SSE_PATH, headers={"Accept": "text/event-stream"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/event-stream"
        assert response.readline() == b"event: queued\n"  # within the 5 s timeout
        proxy.replicas["a"].sse_release.set()
        assert b"event: done" in response.read()
        conn.close()


def test_nginx_follows_replicas_as_they_come_and_go(tmp_path: Path) -> None:
    """`--scale web=2` adds an address to `web`: within `valid` the proxy uses both. A replica
    that dies is passed over, so a page's new websocket lands on one that is up."""
    with running_proxy(tmp_path) as proxy:
        proxy.dns.addresses = ["127.0.0.1"]
        assert proxy.replicas_seen(5) == {"a"}
        proxy.dns.addresses = ["127.0.0.1", "127.0.0.2"]
        time.sleep(2.5)  # the rendered config keeps an answer 1 s (nginx counts whole seconds)
        assert proxy.replicas_seen(30) == {"a", "b"}
        seen = set()
        for _ in range(30):
            name, sock = proxy.websocket()
            sock.close()
            seen.add(name)
        assert seen == {"a", "b"}
        proxy.replicas.pop("a").stop()  # gone, but still in the cached DNS answer
        assert proxy.replicas_seen(10) == {"b"}
        for _ in range(10):
            name, sock = proxy.websocket()
            sock.close()
            assert name == "b"
