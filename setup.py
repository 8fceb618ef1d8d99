"""Build the compiled core (core_ext) with Cython.

Every ``core_ext/*.pyx`` becomes one extension module. ``RECHARGE_CYTHON_DEBUG=1``
builds with line tracing and writes Cython's annotated HTML beside the sources.
"""

import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("RECHARGE_CYTHON_DEBUG") == "1"

extensions = [
    Extension(
        "core_ext." + os.path.splitext(os.path.basename(path))[0],
        [path],
        # zlib's crc32 is the CRC the frames use; linking it keeps the codec at zlib speed.
        libraries=["z"],
        extra_compile_args=["-O3"] if not DEBUG else ["-O0", "-g"],
        define_macros=[("CYTHON_TRACE", "1")] if DEBUG else [],
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
