"""A fake AMD KDS and Intel PCS (or PCCS) on 127.0.0.1, for tests of online collateral.

It serves what it is given (the real vectors' certificates and collateral) the way the
vendors' APIs do, and is strict about requests as the real services are: a VCEK is found
only by its product, its hwID (8 bytes on Turin, 64 before) and exactly its TCB SPLs
(``fmcSPL`` on Turin only); unknown query parameters are 400. Failures, delays and
replacement content are scripted per path; every request is logged, so tests count
requests instead of timing them.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

from cryptography.hazmat.primitives import serialization

from sealroom.attestation.snp.abi import Product
from sealroom.attestation.snp.certs import vek_info
from sealroom.attestation.x509util import load_certificate, load_crl


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Vcek:
    product: str
    hwid: bytes
    spls: dict[str, int]
    der: bytes


def _chain_header(pem: bytes) -> str:
    # PCS sends issuer chains URL-encoded (RFC 3986 percent-encoding of the PEM text).
    return quote(pem.decode(), safe="")


class FakeVendorServer:
    def __init__(self) -> None:
        self._vceks: list[_Vcek] = []
        self._routes: dict[str, Reply] = {}
        self._scripts: dict[str, list[Reply]] = defaultdict(list)
        self._delays: dict[str, float] = {}
        self._lock = threading.Lock()
        self.log: list[str] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    # --- content ------------------------------------------------------------------------

    def add_vcek(self, der: bytes) -> None:
        info = vek_info(load_certificate(der))
        if info.product is None or info.hwid is None:
            raise ValueError("not a VCEK with a product name and hwID")
        spls = {
            "blSPL": info.bl_spl,
            "teeSPL": info.tee_spl,
            "snpSPL": info.snp_spl,
            "ucodeSPL": info.ucode_spl,
        }
        if info.product is Product.TURIN:
            spls["fmcSPL"] = info.fmc_spl
        if any(v is None for v in spls.values()):
            raise ValueError(f"VCEK lacks a TCB SPL extension: {spls}")
        self._vceks.append(
            _Vcek(info.product.value, info.hwid, {k: int(v or 0) for k, v in spls.items()}, der)
        )

    def set(self, path: str, reply: Reply) -> None:
        """Serve ``reply`` at ``path`` (a path, plus ``?query`` for PCS items keyed by it)."""
        with self._lock:
            self._routes[path] = reply

    def add_kds(self, path: str, body: bytes) -> None:
        self.set(path, Reply(200, body))

    def add_tcb_info(self, tdx: bool, fmspc: str, body: bytes, chain_pem: bytes) -> None:
        tee = "tdx" if tdx else "sgx"
        self.set(
            f"/{tee}/certification/v4/tcb?fmspc={fmspc.lower()}",
            Reply(
                200,
                body,
                {
                    "Content-Type": "application/json",
                    "TCB-Info-Issuer-Chain": _chain_header(chain_pem),
                },
            ),
        )

    def add_qe_identity(self, tdx: bool, body: bytes, chain_pem: bytes) -> None:
        tee = "tdx" if tdx else "sgx"
        self.set(
            f"/{tee}/certification/v4/qe/identity",
            Reply(
                200,
                body,
                {
                    "Content-Type": "application/json",
                    "SGX-Enclave-Identity-Issuer-Chain": _chain_header(chain_pem),
                },
            ),
        )

    def add_pck_crl(self, ca: str, crl: bytes, chain_pem: bytes) -> None:
        der = load_crl(crl).public_bytes(serialization.Encoding.DER)
        self.set(
            f"/sgx/certification/v4/pckcrl?ca={ca}",
            Reply(
                200,
                der,
                {
                    "Content-Type": "application/pkix-crl",
                    "SGX-PCK-CRL-Issuer-Chain": _chain_header(chain_pem),
                },
            ),
        )

    def add_root_ca_crl(self, crl: bytes) -> None:
        der = load_crl(crl).public_bytes(serialization.Encoding.DER)
        # Intel: DER at the root certificate's CDP; a PCCS: hex text at /rootcacrl.
        self.set("/IntelSGXRootCA.der", Reply(200, der, {"Content-Type": "application/pkix-crl"}))
        self.set("/sgx/certification/v4/rootcacrl", Reply(200, der.hex().encode()))

    def script(self, path: str, *replies: Reply) -> None:
        """The next requests for ``path`` (no query) get these replies, in order."""
        with self._lock:
            self._scripts[path].extend(replies)

    def delay(self, path: str, seconds: float) -> None:
        with self._lock:
            self._delays[path] = seconds

    def count(self, prefix: str = "/") -> int:
        with self._lock:
            return sum(1 for p in self.log if p.startswith(prefix))

    # --- request handling ---------------------------------------------------------------

    def _kds_vcek(self, product: str, hwid_hex: str, query: str) -> Reply:
        try:
            hwid = bytes.fromhex(hwid_hex)
        except ValueError:
            return Reply(400, b"bad hwid")
        want_len = 8 if product == Product.TURIN.value else 64
        if len(hwid) != want_len:
            return Reply(400, f"hwid must be {want_len} bytes for {product}".encode())
        params = parse_qs(query, keep_blank_values=True)
        expected = {"blSPL", "teeSPL", "snpSPL", "ucodeSPL"}
        if product == Product.TURIN.value:
            expected.add("fmcSPL")
        if set(params) != expected or any(
            len(v) != 1 or not v[0].isdigit() for v in params.values()
        ):
            return Reply(400, f"expected exactly {sorted(expected)}".encode())
        spls = {k: int(v[0]) for k, v in params.items()}
        for v in self._vceks:
            if v.product == product and v.hwid == hwid and v.spls == spls:
                return Reply(200, v.der, {"Content-Type": "application/x-x509-ca-cert"})
        return Reply(404, b"Not Found")

    def _pcs_key(self, path: str, query: str) -> tuple[str, Reply | None]:
        params = parse_qs(query, keep_blank_values=True)
        update = params.pop("update", None)
        if update is not None and update != ["standard"] and update != ["early"]:
            return path, Reply(400, b"update must be standard or early")
        if path.endswith("/pckcrl"):
            enc = params.pop("encoding", ["pem"])
            ca = params.pop("ca", None)
            if params or ca not in (["platform"], ["processor"]) or enc not in (["der"], ["pem"]):
                return path, Reply(400, b"bad pckcrl query")
            key = f"{path}?ca={ca[0]}"
            reply = self._routes.get(key)
            if reply is not None and enc == ["pem"]:
                pem = load_crl(reply.body).public_bytes(serialization.Encoding.PEM)
                reply = Reply(200, pem, {**reply.headers, "Content-Type": "application/x-pem-file"})
            return key, reply or Reply(404)
        if path.endswith("/tcb"):
            fmspc = params.pop("fmspc", None)
            if params or fmspc is None or len(fmspc) != 1 or len(fmspc[0]) != 12:
                return path, Reply(400, b"bad tcb query")
            key = f"{path}?fmspc={fmspc[0].lower()}"
            return key, self._routes.get(key) or Reply(404)
        if params:
            return path, Reply(400, b"unexpected query parameters")
        return path, self._routes.get(path) or Reply(404)

    def handle(self, target: str) -> Reply:
        parts = urlsplit(target)
        path, query = parts.path, parts.query
        with self._lock:
            self.log.append(target)
            delay = self._delays.get(path, 0.0)
            scripted = self._scripts[path].pop(0) if self._scripts.get(path) else None
        if delay:
            time.sleep(delay)
        if scripted is not None:
            return scripted
        with self._lock:
            segs = path.strip("/").split("/")
            if (
                len(segs) == 4
                and segs[:2] == ["vcek", "v1"]
                and segs[3] not in ("cert_chain", "crl")
            ):
                return self._kds_vcek(segs[2], segs[3], query)
            if segs[0] in ("vcek", "vlek"):
                if query:
                    return Reply(400, b"unexpected query")
                return self._routes.get(path) or Reply(404, b"Not Found")
            if segs[0] in ("sgx", "tdx"):
                return self._pcs_key(path, query)[1] or Reply(404)
            return self._routes.get(path) or Reply(404)

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL; it stays known after stop() (tests then expect refusals there)."""
        assert self._url is not None, "server not started"
        return self._url

    def start(self) -> FakeVendorServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                reply = server.handle(self.path)
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        host, port = self._httpd.server_address[:2]
        self._url = f"http://{host!s}:{port}"
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join()
            self._httpd = None

    def __enter__(self) -> FakeVendorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests(self) -> Iterator[str]:
        with self._lock:
            yield from list(self.log)
