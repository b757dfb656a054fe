"""cffi build script for the C core (out-of-line API mode): ``vmem._vmcore``.

The cdef is the headers in ``HEADERS`` themselves, less their preprocessor lines;
setup.py names this file in ``cffi_modules`` so ``pip install .`` compiles the core.

``VMEM_CORE_DEBUG=1`` in the environment of the build makes a debug core: compiled with
``-DVM_DEBUG -O1 -g``, it checks every invariant of ``csrc/vm.c`` after each call that
changes a page table and aborts, naming the call and the invariant, if one broke
(``vmem._core.DEBUG_BUILD`` says which build is loaded). For tests only: each change costs
O(pages). A separate name from ``VMEM_DEBUG``, which only makes the CLI show tracebacks.
"""

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = ["vm.c", "tokest.c", "ii.c", "fhash.c", "half.c", "hnswlinks.c"]
HEADERS = ["vm.h", "ii.h", "fhash.h", "half.h", "hnswlinks.h"]


def _cdef() -> str:
    lines = [line for name in HEADERS for line in (HERE / name).read_text().splitlines()]
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


DEBUG = os.environ.get("VMEM_CORE_DEBUG", "") == "1"
OPTIMISE = ["-O1", "-g"] if DEBUG else ["-O3"]

ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "vmem._vmcore",
    "".join(f'#include "{name}"\n' for name in HEADERS),
    sources=[f"csrc/{name}" for name in SOURCES],  # relative to the project root, where pip builds
    include_dirs=["csrc"],
    define_macros=[("VM_DEBUG", "1")] if DEBUG else [],
    extra_compile_args=[*OPTIMISE, "-std=gnu11", "-Wall", "-Wextra", "-fno-strict-aliasing",
                        "-ffp-contract=off"],  # BM25 sums bit-equal to the Python reference
    libraries=["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
