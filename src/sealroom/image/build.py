"""Build the guest image (ADR 0034): Debian's kernel and a reproducible initramfs.

Inputs are Debian packages and files of this machine only: the kernel comes out of a
``linux-image-*-amd64`` package (``apt-get download``, or a .deb the caller names),
Python is Debian's ``/usr/bin/python3.11`` with exactly the standard-library modules the
guest's ``/init`` imports (``modulefinder``), tpm2-tools' ``tpm2_quote`` with the shared
objects ``ldd`` lists. Same inputs, same bytes: entries sorted, mtime 0, owner 0, hash-based
``.pyc``, ``gzip`` without a timestamp. ``image.json`` records each artifact's SHA-256 and
the inputs (package versions, the command line).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealroom import paths
from sealroom.errors import InvalidInputError, UnavailableError
from sealroom.image import cpio

GUEST_PYTHON = Path("/usr/bin/python3.11")
TPM2_QUOTE = Path("/usr/bin/tpm2_quote")
# dlopen()ed by libtss2-tctildr for TCTI "device:": ldd does not see it
DLOPENED = ("libtss2-tcti-device.so.0",)
LIBDIR = "usr/lib/x86_64-linux-gnu"
INTERPRETER = "lib64/ld-linux-x86-64.so.2"
KERNEL_PACKAGE = "linux-image-amd64"
# ttyS0: console (kernel messages); the host channel is ttyS1. panic=-1: a failing guest
# resets, and QEMU runs with -no-reboot, so it stops instead of looping.
DEFAULT_CMDLINE = "console=ttyS0 panic=-1 loglevel=4"
IMAGE_JSON = "image.json"
IMAGE_FORMAT = "sealroom-guest/v1"

_FINDER = r"""
import json, modulefinder, sys, sysconfig
f = modulefinder.ModuleFinder(excludes=json.loads(sys.argv[2]))
f.run_script(sys.argv[1])
for extra in sys.argv[3:]:
    f.import_hook(extra)
files = sorted({m.__file__ for m in f.modules.values() if m.__file__})
print(json.dumps({"files": files, "stdlib": sysconfig.get_paths()["stdlib"],
                  "platstdlib": sysconfig.get_paths()["platstdlib"]}))
"""
# imported by the interpreter itself before /init runs (not visible to modulefinder)
_STARTUP = ("encodings.utf_8", "encodings.latin_1", "encodings.aliases", "encodings.ascii")
# reachable only through imports /init never takes (doc tools, test runners, network and
# mail stacks pulled in by optional branches of the modules it does use)
_EXCLUDES = (
    "asyncio", "bz2", "distutils", "doctest", "email", "ftplib", "http", "lib2to3", "lzma",
    "multiprocessing", "pdb", "pydoc", "pydoc_data", "pickle", "ssl", "test", "tkinter",
    "unittest", "urllib", "xml", "xmlrpc", "zipfile", "importlib.metadata", "tarfile",
    "gettext", "logging", "inspect", "dis", "optparse", "argparse", "calendar",
    "_pydecimal", "decimal", "webbrowser",
)  # fmt: skip


@dataclass(frozen=True)
class Artifact:
    name: str
    sha256: str
    size: int


def _run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(argv, capture_output=True, check=False, **kw)  # noqa: S603
    except OSError as e:
        raise UnavailableError(f"cannot run {argv[0]}: {e}", code="image-tool-missing") from e
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip()[-500:]
        raise UnavailableError(f"{' '.join(argv[:3])} failed: {tail}", code="image-build-failed")
    return proc


def download_kernel_deb(cache: Path) -> Path:
    """``apt-get download`` of the kernel package ``linux-image-amd64`` depends on."""
    out = _run(["apt-cache", "depends", KERNEL_PACKAGE]).stdout.decode()
    m = re.search(r"Depends: (linux-image-[0-9][^\s]*-amd64)", out)
    if m is None:
        raise UnavailableError(f"apt-cache depends {KERNEL_PACKAGE}: no kernel image package")
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{m.group(1)}_*.deb"))
    if not found:
        _run(["apt-get", "download", m.group(1)], cwd=cache)
        found = sorted(cache.glob(f"{m.group(1)}_*.deb"))
    if not found:
        raise UnavailableError(f"apt-get download {m.group(1)} left no .deb in {cache}")
    return found[-1]


def kernel_from_deb(deb: Path) -> tuple[bytes, str]:
    """The ``/boot/vmlinuz-*`` of a kernel package, and the package's version."""
    version = _run(["dpkg-deb", "-f", str(deb), "Package", "Version"]).stdout.decode()
    tar = _run(["dpkg-deb", "--fsys-tarfile", str(deb)]).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        for member in tf.getmembers():
            if re.fullmatch(r"\./boot/vmlinuz-[^/]+", member.name) and member.isfile():
                f = tf.extractfile(member)
                if f is not None:
                    return f.read(), " ".join(version.split())
    raise InvalidInputError(f"{deb}: no /boot/vmlinuz-* in this package")


def _ldd(path: Path) -> list[Path]:
    out = _run(["ldd", str(path)]).stdout.decode()
    libs = []
    for line in out.splitlines():
        m = re.search(r"=> (/\S+)", line) or re.match(r"\s*(/\S+ld-linux\S*)", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def _python_files(init_src: Path) -> tuple[list[Path], Path]:
    if not GUEST_PYTHON.is_file():
        raise UnavailableError(f"{GUEST_PYTHON} is missing (Debian: apt-get install python3.11)")
    out = _run(
        [str(GUEST_PYTHON), "-I", "-c", _FINDER, str(init_src), json.dumps(_EXCLUDES), *_STARTUP]
    ).stdout
    info = json.loads(out)
    stdlib = Path(info["stdlib"])
    files = [Path(f) for f in info["files"] if f != str(init_src)]
    outside = [f for f in files if stdlib not in f.parents]
    if outside:
        raise InvalidInputError(f"/init imports modules outside the standard library: {outside}")
    return files, stdlib


def _pycs(sources: list[Path], python: Path) -> list[bytes]:
    """The hash-based (checked) .pyc of each source, compiled by the guest's own
    interpreter (its magic number), in one run."""
    code = (
        "import py_compile, sys\n"
        "for i, src in enumerate(sys.argv[2:]):\n"
        "    py_compile.compile(src, cfile=f'{sys.argv[1]}/{i}.pyc', dfile=src, doraise=True,"
        " invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        _run([str(python), "-I", "-c", code, tmp, *map(str, sources)])
        return [(Path(tmp) / f"{i}.pyc").read_bytes() for i in range(len(sources))]


def initramfs_entries(init_src: Path) -> tuple[list[cpio.Entry], dict[str, str]]:
    """Every file of the initramfs, and the versions of what went in."""
    entries: dict[str, cpio.Entry] = {}

    def add_dir(path: str) -> None:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            entries.setdefault(p, cpio.Entry(p, stat.S_IFDIR | 0o755))

    def add_file(path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        add_dir(path.rpartition("/")[0]) if "/" in path else None
        entries[path] = cpio.Entry(path, stat.S_IFREG | mode, data)

    for d in ("proc", "sys", "dev", "tmp", "run", "usr/bin", LIBDIR):
        add_dir(d)
    entries["dev/console"] = cpio.Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    entries["lib"] = cpio.Entry("lib", stat.S_IFLNK | 0o777, b"usr/lib")
    entries["bin"] = cpio.Entry("bin", stat.S_IFLNK | 0o777, b"usr/bin")

    init = b"#!/usr/bin/python3.11 -ISB\n" + init_src.read_bytes()
    add_file("init", init, 0o755)

    libs: set[Path] = set()
    for exe in (GUEST_PYTHON, TPM2_QUOTE):
        if not exe.is_file():
            raise UnavailableError(f"{exe} is missing (Debian: python3.11, tpm2-tools)")
        add_file(str(exe), exe.read_bytes(), 0o755)
        libs.update(_ldd(exe))
    for name in DLOPENED:
        lib = Path("/usr/lib/x86_64-linux-gnu") / name
        libs.add(lib)
        libs.update(_ldd(lib))

    files, _ = _python_files(init_src)
    sources = [f for f in files if f.suffix == ".py"]
    for f in files:
        rel = str(f).lstrip("/")  # the same path in the guest (sys.prefix = /usr)
        add_file(rel, f.read_bytes(), 0o755 if f.suffix == ".so" else 0o644)
        if f.suffix == ".so":
            libs.update(_ldd(f))
    for f, pyc in zip(sources, _pycs(sources, GUEST_PYTHON), strict=True):
        add_file(str(f.parent / "__pycache__" / f"{f.stem}.cpython-311.pyc").lstrip("/"), pyc)

    for lib in sorted(libs):
        real = lib.resolve()
        if "ld-linux" in lib.name:
            add_file(INTERPRETER, real.read_bytes(), 0o755)
            continue
        add_file(f"{LIBDIR}/{lib.name}", real.read_bytes(), 0o755)
    versions = {
        "python3.11": _dpkg_version("python3.11-minimal"),
        "tpm2-tools": _dpkg_version("tpm2-tools"),
        "libtss2-esys": _dpkg_version("libtss2-esys-3.0.2-0"),
    }
    return list(entries.values()), versions


def _dpkg_version(package: str) -> str:
    try:
        return _run(["dpkg-query", "-W", "-f", "${Version}", package]).stdout.decode()
    except UnavailableError:
        return "unknown"


def initramfs(init_src: Path) -> tuple[bytes, dict[str, str]]:
    entries, versions = initramfs_entries(init_src)
    return gzip.compress(cpio.archive(entries), compresslevel=9, mtime=0), versions


def init_source() -> Path:
    return Path(__file__).with_name("guest_init.py")


def build(out: Path, *, kernel_deb: Path | None = None, cache: Path | None = None,
          cmdline: str = DEFAULT_CMDLINE) -> dict[str, Any]:  # fmt: skip
    """Write ``vmlinuz``, ``initrd.img`` and ``image.json`` into ``out``; the description."""
    if shutil.which("dpkg-deb") is None:
        raise UnavailableError("dpkg-deb is missing: the image is built from Debian packages")
    if kernel_deb is None:
        kernel_deb = download_kernel_deb(cache or paths.package_cache())
    kernel, kernel_version = kernel_from_deb(kernel_deb)
    initrd, versions = initramfs(init_source())
    out.mkdir(parents=True, exist_ok=True)
    artifacts = {}
    for name, data in (("vmlinuz", kernel), ("initrd.img", initrd)):
        (out / name).write_bytes(data)
        artifacts[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    desc = {
        "format": IMAGE_FORMAT,
        "cmdline": cmdline,
        "artifacts": artifacts,
        "inputs": {"kernel": kernel_version, **versions},
    }
    (out / IMAGE_JSON).write_text(json.dumps(desc, indent=2, sort_keys=True) + "\n")
    return desc


@dataclass(frozen=True)
class GuestImage:
    directory: Path
    kernel: Path
    initrd: Path
    cmdline: str
    description: dict[str, Any]

    @classmethod
    def load(cls, directory: Path) -> GuestImage:
        try:
            desc = json.loads((directory / IMAGE_JSON).read_text())
        except (OSError, ValueError) as e:
            raise InvalidInputError(f"{directory}: not a sealroom guest image ({e})") from e
        if not isinstance(desc, dict) or desc.get("format") != IMAGE_FORMAT:
            raise InvalidInputError(f"{directory}/{IMAGE_JSON}: format is not {IMAGE_FORMAT}")
        img = cls(directory, directory / "vmlinuz", directory / "initrd.img",
                  str(desc["cmdline"]), desc)  # fmt: skip
        for path in (img.kernel, img.initrd):
            if not path.is_file():
                raise InvalidInputError(f"{directory}: {path.name} is missing")
        return img
