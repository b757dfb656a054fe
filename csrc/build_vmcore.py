"""cffi build script for the C core (out-of-line API mode): ``vmem._vmcore``.

The cdef is ``vm.h``, ``ii.h`` and ``fhash.h`` themselves, less their preprocessor lines;
setup.py names this file in ``cffi_modules`` so ``pip install .`` compiles the core.
"""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = ["vm.c", "tokest.c", "ii.c", "fhash.c"]
HEADERS = ["vm.h", "ii.h", "fhash.h"]


def _cdef() -> str:
    lines = [line for name in HEADERS for line in (HERE / name).read_text().splitlines()]
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "vmem._vmcore",
    '#include "vm.h"\n#include "ii.h"\n#include "fhash.h"',
    sources=[f"csrc/{name}" for name in SOURCES],  # relative to the project root, where pip builds
    include_dirs=["csrc"],
    extra_compile_args=["-O3", "-std=gnu11", "-Wall", "-Wextra", "-fno-strict-aliasing",
                        "-ffp-contract=off"],  # BM25 sums bit-equal to the Python reference
    libraries=["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
