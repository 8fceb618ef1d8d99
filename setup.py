"""Build the compiled core (core_ext) with Cython.

Every ``core_ext/*.pyx`` becomes one extension module. ``RECHARGE_CYTHON_DEBUG=1``
builds with line tracing and writes Cython's annotated HTML beside the sources.
When zlib's headers and library are present the CRC module hands long CRCs to zlib
(``CORE_EXT_HAVE_ZLIB``); without them (or with ``RECHARGE_NO_ZLIB=1``) it builds
anyway on its own table CRC.
"""

import glob
import os
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools._distutils.ccompiler import new_compiler
from setuptools._distutils.errors import CompileError, LinkError
from setuptools._distutils.sysconfig import customize_compiler

DEBUG = os.environ.get("RECHARGE_CYTHON_DEBUG") == "1"


def have_zlib() -> bool:
    """Whether a program including zlib.h and calling crc32 compiles and links here."""
    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write("#include <zlib.h>\nint main(void) { return (int)crc32(0L, 0, 0); }\n")
        try:
            objects = compiler.compile([source], output_dir=tmp)
            compiler.link_executable(objects, "probe", output_dir=tmp, libraries=["z"])
        except (CompileError, LinkError):
            return False
    return True


ZLIB = os.environ.get("RECHARGE_NO_ZLIB") != "1" and have_zlib()

extensions = [
    Extension(
        "core_ext." + os.path.splitext(os.path.basename(path))[0],
        [path],
        extra_compile_args=["-O3"] if not DEBUG else ["-O0", "-g"],
        define_macros=([("CYTHON_TRACE", "1")] if DEBUG else []) + ([("CORE_EXT_HAVE_ZLIB", "1")] if ZLIB else []),
        libraries=["z"] if ZLIB else [],
    )
    for path in sorted(glob.glob("core_ext/*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        annotate=DEBUG,
        compiler_directives={
            "boundscheck": DEBUG,
            "wraparound": False,
            "cdivision": True,
            "linetrace": DEBUG,
        },
    )
)
